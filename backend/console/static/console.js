// The console's own script: the inbox's live queue (server-sent events), its title and
// optional sound, and the transcript's details toggle. Everything else is htmx.
(function () {
  "use strict";
  const baseTitle = document.title;

  function beep() {
    try {
      const audio = new AudioContext();
      const tone = audio.createOscillator();
      tone.frequency.value = 880;
      tone.connect(audio.destination);
      tone.start();
      tone.stop(audio.currentTime + 0.15);
    } catch (e) { /* no sound: the title still says it */ }
  }

  function watchQueue(queue) {
    const sound = document.getElementById("sound");
    if (sound) {
      sound.checked = localStorage.getItem("parley.sound") === "on";
      sound.addEventListener("change", () =>
        localStorage.setItem("parley.sound", sound.checked ? "on" : "off"));
    }
    let waiting = null;
    const events = new EventSource(queue.dataset.events);
    events.addEventListener("queue", (message) => {
      const now = JSON.parse(message.data).waiting;
      document.title = (now ? "(" + now + ") " : "") + baseTitle;
      if (waiting !== null) {
        document.body.dispatchEvent(new Event("queue-changed"));
        if (now > waiting && sound && sound.checked) beep();
      }
      waiting = now;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const queue = document.getElementById("queue");
    if (queue && queue.dataset.events) watchQueue(queue);
    const details = document.getElementById("details");
    if (details) {
      details.addEventListener("change", () =>
        document.body.classList.toggle("show-details", details.checked));
    }
  });
})();
