"""docker-compose.yml and the Dockerfiles cannot be built here (no Docker engine), so
these tests hold them to what CI does and to what the code reads: every RUN is a command
`make test` runs, every COPY names something that is there, and every image holds the
files its processes read, its secrets left to the environment."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

from backend.core.settings import PROJECT_ROOT, Settings
from backend.ops import launcher
from backend.ops.cli import main as parley_cli
from backend.ops.rasa_project import CONFIG, MODEL_INPUTS, RasaProject
from message_rules.event_queue import queue_bounds
from tests.backend.ops.build_files import (
    DockerIgnore,
    Image,
    Makefile,
    Stage,
    base_image,
    build,
    ci_goals,
    context_exists,
    holds,
    parse_dockerfile,
    parse_makefile,
)

DOCKERFILES = sorted((PROJECT_ROOT / "docker").glob("*.Dockerfile"))
# The code each image runs, whose reads it must hold.
BACKEND_PACKAGES = ("backend", "message_rules")
BOT_PACKAGES = ("bot", "actions", "channels", "message_rules")
SECRET = re.compile(r"TOKEN|SECRET|PASS|AUTH", re.I)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return loaded


@cache
def makefile() -> Makefile:
    return parse_makefile((PROJECT_ROOT / "Makefile").read_text())


@cache
def ci_commands() -> frozenset[str]:
    """Every command `make test` may run, as .ci/run (CI's entry point) runs it."""
    goals = ci_goals((PROJECT_ROOT / ".ci" / "run").read_text())
    return frozenset(makefile().commands(goals))


def recipe(target: str) -> str:
    """The command the Makefile runs for a target (its first recipe line)."""
    return makefile().recipes[makefile().expand(target)][0]


def installs() -> dict[str, str]:
    """The command that makes each environment, by what it makes (.venv, .venv-bot)."""
    return {
        makefile().expand("$(VENV)"): recipe("$(BACKEND_READY)"),
        makefile().expand("$(BOT)"): recipe("$(BOT_READY)"),
    }


def models_dir() -> str:
    """Where `parley train` puts the model: the setting's default, which the images keep."""
    return str(Settings.model_fields["models_dir"].default)


@cache
def ignored() -> DockerIgnore:
    return DockerIgnore((PROJECT_ROOT / ".dockerignore").read_text())


def stages(dockerfile: Path) -> list[Stage]:
    return parse_dockerfile(dockerfile.read_text())


def images(dockerfile: Path) -> dict[str, Image]:
    makes = {command: [made] for made, command in installs().items()}
    makes[recipe("train")] = [models_dir()]
    return build(stages(dockerfile), makes)


def image_of(service: str) -> Image:
    built = compose()["services"][service]["build"]
    return images(PROJECT_ROOT / built["dockerfile"])[built.get("target", "")]


def services_built_from(dockerfile: str) -> list[str]:
    return [
        name
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("dockerfile") == dockerfile
    ]


def read_by(packages: tuple[str, ...]) -> set[str]:
    """The files and folders of the project that code in `packages` reads by a literal
    path: `PROJECT_ROOT / "bot" / "domain"`, `Path(__file__).resolve().parent / "x"`."""
    found: set[str] = set()
    for package in packages:
        for source in (PROJECT_ROOT / package).rglob("*.py"):
            text = source.read_text()
            for parts in re.findall(r'PROJECT_ROOT((?:\s*/\s*"[^"]+")+)', text):
                found.add("/".join(re.findall(r'"([^"]+)"', parts)))
            here = r'Path\(__file__\)\.resolve\(\)((?:\.parent)+)((?:\s*/\s*"[^"]+")+)'
            for parents, parts in re.findall(here, text):
                base = source.relative_to(PROJECT_ROOT).parents[parents.count(".parent") - 1]
                found.add(str(PurePosixPath(base, *re.findall(r'"([^"]+)"', parts))))
    return found


def test_every_dockerfile_and_build_target_exists() -> None:
    for name, service in compose()["services"].items():
        build_ = service.get("build")
        if not build_:
            continue
        assert build_["context"] == ".", name
        dockerfile = PROJECT_ROOT / build_["dockerfile"]
        assert dockerfile.exists(), name
        if "target" in build_:
            assert build_["target"] in {s.name for s in stages(dockerfile)}, name


def test_the_images_run_only_commands_ci_runs() -> None:
    for dockerfile in DOCKERFILES:
        for stage in stages(dockerfile):
            for instruction in stage.instructions:
                if instruction.keyword == "RUN":
                    assert instruction.arguments in ci_commands(), (
                        f"{dockerfile.name} runs {instruction.arguments!r}, which `make test` "
                        "never runs: build the image the way CI builds"
                    )


def test_every_copy_names_something_the_build_has() -> None:
    for dockerfile in DOCKERFILES:
        built = images(dockerfile)
        for stage in stages(dockerfile):
            for instruction in stage.instructions:
                if instruction.keyword != "COPY":
                    continue
                *sources, _ = instruction.arguments.split(" ")
                origin = instruction.flags.get("from")
                for source in sources:
                    where = (dockerfile.name, stage.name, source)
                    if origin is None:
                        assert context_exists(PROJECT_ROOT, source), where
                        assert not ignored()(source), (*where, "left out by .dockerignore")
                    elif origin in built and built[origin].stage.instructions:
                        assert holds(built[origin].held, PurePosixPath(source), ignored()), where
                    else:
                        # A stage that is only an official Python image: its interpreter.
                        base = next(s.base for s in stages(dockerfile) if s.name == origin)
                        version = re.fullmatch(r"python:(\d+\.\d+)-\S+", base)
                        assert version and f"python{version.group(1)}" in source, where


def test_an_environment_is_copied_only_beside_the_interpreter_it_was_made_with() -> None:
    # A virtual environment links to the interpreter that made it, by path.
    for dockerfile in DOCKERFILES:
        every = stages(dockerfile)
        by_name = {s.name: s for s in every}
        for stage in every:
            for instruction in stage.instructions:
                origin = instruction.flags.get("from")
                copied = [Path(s).name for s in instruction.arguments.split()]
                if origin in by_name and any(name in installs() for name in copied):
                    assert base_image(every, stage) == base_image(every, by_name[origin]), (
                        dockerfile.name,
                        stage.name,
                    )


def test_each_environment_is_installed_with_what_its_install_reads() -> None:
    """What the Makefile says `scripts/install` depends on is in the image before it
    runs, and so are the project's packages: it installs the project editable, and
    hatchling points the environment only at the packages that exist then."""
    packages = (*BACKEND_PACKAGES, *BOT_PACKAGES)
    for dockerfile in DOCKERFILES:
        for image in images(dockerfile).values():
            for made, command in installs().items():
                target = makefile().expand(f"{made}/.parley-installed")
                for ran, held in image.runs:
                    if ran != command:
                        continue
                    needed = [*makefile().prerequisites[target], "README.md"]
                    needed += [p for p in packages if image.holds(p, ignored())]
                    for path in needed:
                        assert holds(held, image.at(path), ignored()), (dockerfile.name, ran, path)


def test_the_bot_image_trains_its_model_with_parley_train_as_ci_does() -> None:
    built = images(PROJECT_ROOT / "docker" / "bot.Dockerfile")
    rasa = image_of("rasa")
    copies = [i for i in rasa.stage.instructions if i.keyword == "COPY" and "from" in i.flags]
    model_from = [i for i in copies if i.arguments.split()[-1] == models_dir()]
    assert len(model_from) == 1, "the rasa image copies its models from one stage"
    trainer = built[model_from[0].flags["from"]]
    # All of them: the model and the generated training input it reads (models/build).
    assert model_from[0].arguments.split()[0] == str(trainer.at(models_dir()))
    commands = [ran for ran, _ in trainer.runs]
    install_backend, install_bot = installs().values()
    assert commands == [install_backend, install_bot, recipe("train")]
    # Everything `parley train` reads (RasaProject's model inputs and the pinned
    # libraries that go into the model's fingerprint) is there when it runs.
    held = trainer.runs[-1][1]
    for path in (*MODEL_INPUTS, CONFIG, "requirements/bot.txt", "bot/training_build.py"):
        assert holds(held, trainer.at(path), ignored()), path
    # The model names its spaCy pipeline by absolute path, under the trainer's models/.
    assert rasa.workdir == trainer.workdir
    assert rasa.holds(models_dir(), ignored())


def test_the_bot_images_start_what_parley_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    rasa, actions = image_of("rasa"), image_of("actions")
    for name in ("rasa", "actions"):
        # The images' commands run; compose adds no command of its own.
        assert "command" not in compose()["services"][name]
    app = rasa.workdir
    # The executables are the image's, not this checkout's.
    monkeypatch.setattr(RasaProject, "executable", lambda self, name: str(self.bot_bin / name))
    project = RasaProject(root=Path(app), models_dir=Path(app / models_dir()))
    settings = Settings(
        host=rasa.env["PARLEY_HOST"],
        rasa_port=int(expose(rasa)),
        action_server_port=int(expose(actions)),
        rasa_endpoints=Path(app / "bot/endpoints.scale.yml"),
        rasa_credentials=Path(app / "bot/credentials.scale.yml"),
    )
    assert rasa.cmd == project.rasa_server_command(settings, project.models_dir)
    assert actions.cmd == project.action_server_command()
    assert (expose(rasa), expose(actions)) == (
        str(Settings.model_fields["rasa_port"].default),
        str(Settings.model_fields["action_server_port"].default),
    )
    for image in (rasa, actions):
        assert image.cmd is not None
        for argument in image.cmd:
            if argument.startswith(f"{app}/"):
                assert image.holds(argument, ignored()), argument
        # The environment `parley run` gives the bot's processes.
        assert launcher.BOT_RUNTIME_ENV.items() <= image.env.items()
    assert launcher.RASA_SERVING_ENV.items() <= rasa.env.items()


def expose(image: Image) -> str:
    ports = [i.arguments for i in image.stage.instructions if i.keyword == "EXPOSE"]
    assert len(ports) == 1, image.stage.name
    return ports[0]


def test_the_bot_images_hold_what_the_bot_runtime_reads() -> None:
    reads = read_by(BOT_PACKAGES) - {".env"}
    assert {"data", "bot/domain"} <= reads  # the business and catalog, the forms
    for service in services_built_from("docker/bot.Dockerfile"):
        image = image_of(service)
        for path in (*BOT_PACKAGES, *reads):
            assert image.holds(path, ignored()), (service, path)


def test_the_backend_image_holds_what_parley_backend_and_worker_read() -> None:
    reads = read_by(BACKEND_PACKAGES) - {".env"}
    # What marketers edit, the bot's domain (sequences name its intents and forms), the
    # migrations, the API's templates and the web chat's widget.
    assert {"bot/domain", "backend/migrations", "backend/templates"} <= reads
    reads.add(str(Settings.model_fields["data_dir"].default))
    for service in services_built_from("docker/backend.Dockerfile"):
        image = image_of(service)
        for path in (*BACKEND_PACKAGES, *reads):
            assert image.holds(path, ignored()), (service, path)
        # Each command is the `parley` that `scripts/install backend` put on PATH.
        command = compose()["services"][service].get("command") or image.cmd
        command = shlex.split(command) if isinstance(command, str) else command
        assert command and command[0] == "parley", service
        assert image.env["PATH"].startswith(f"{image.at(makefile().expand('$(VENV)'))}/bin:")
        group: click.Command = parley_cli
        for word in command[1:]:
            if word.startswith("-"):
                break
            assert isinstance(group, click.Group) and word in group.commands, (service, command)
            group = group.commands[word]


def test_secrets_come_from_the_environment() -> None:
    assert ignored()(".env"), ".env must never reach an image"
    for dockerfile in DOCKERFILES:
        for name, image in images(dockerfile).items():
            assert not image.holds(".env", ignored()), (dockerfile.name, name)
            assert not [k for k in image.env if SECRET.search(k)], (dockerfile.name, name)
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), (name, key)


def test_the_services_reach_each_other_on_the_ports_their_images_listen_on() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            for host, port in re.findall(r"https?://([a-z][\w-]*):(\d+)", str(value)):
                if "build" in services.get(host, {}):
                    assert expose(image_of(host)) == port, (name, key)


def test_the_scale_endpoints_use_a_shared_lock_store_and_the_bounded_event_queue() -> None:
    endpoints = yaml.safe_load((PROJECT_ROOT / "bot" / "endpoints.scale.yml").read_text())
    assert endpoints["lock_store"]["type"] == "bot.lock_store.AtomicRedisLockStore"
    assert endpoints["tracker_store"]["type"] == "bot.tracker_store.ParleySQLTrackerStore"
    # Rasa publishes every event to a bounded RabbitMQ queue alone, no HTTP posting
    # (docs/privacy.md); the backend's consumer declares it with the same bounds.
    broker = endpoints["event_broker"]
    assert broker["type"] == "bot.bounded_pika.BoundedPikaEventBroker"
    assert "forward_to" not in broker
    defaults = Settings.model_fields
    # The queue is the consumer's setting, PARLEY_EVENTS_QUEUE, given to both sides.
    assert broker["queues"] == ["${PARLEY_EVENTS_QUEUE}"]
    assert broker["exchange_name"] == "${PARLEY_EVENTS_QUEUE}"  # not shared with others
    services = compose()["services"]
    for name in ("rasa", "events"):
        assert services[name]["environment"]["PARLEY_EVENTS_QUEUE"] == (
            defaults["events_queue"].default
        ), name
    assert queue_bounds(broker["max_length"], broker["message_ttl_hours"]) == queue_bounds(
        defaults["events_queue_max_length"].default, defaults["events_queue_ttl_hours"].default
    )


def test_the_events_service_consumes_the_queue_rasa_publishes_to() -> None:
    services = compose()["services"]
    events, rasa = services["events"], services["rasa"]
    assert events["command"] == ["parley", "consume-events"]
    assert events.get("deploy", {}).get("replicas", 1) == 1  # one consumer: in order
    # The same RabbitMQ, user and password as the Rasa servers publish with.
    for name in ("PARLEY_RABBITMQ_HOST", "PARLEY_RABBITMQ_USER", "PARLEY_RABBITMQ_PASSWORD"):
        assert events["environment"][name] == rasa["environment"][name], name
    assert {"db", "rabbitmq", "migrate"} <= set(events["depends_on"])


def test_each_profile_names_an_event_broker_that_exists() -> None:
    for name, expected in (
        # The embedded default posts intents and completed forms to the backend.
        ("endpoints.yml", "bot.conversation_events.BackendEventBroker"),
        ("endpoints.scale.yml", "bot.bounded_pika.BoundedPikaEventBroker"),
    ):
        endpoints = yaml.safe_load((PROJECT_ROOT / "bot" / name).read_text())
        assert endpoints["event_broker"]["type"] == expected, name
        module, _, cls = expected.rpartition(".")
        source = (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py")
        assert f"class {cls}(" in source.read_text(), name
