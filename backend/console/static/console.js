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
      // The first event too: a hand-off opened between the page and this stream is in it.
      document.body.dispatchEvent(new Event("queue-changed"));
      if (waiting !== null && now > waiting && sound && sound.checked) beep();
      waiting = now;
    });
  }

  // A sequence's charts, from the JSON the page carries (no inline script: the CSP).
  function drawCharts() {
    const source = document.getElementById("chart-data");
    if (!source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const colours = ["#2457d6", "#5b8def", "#1e7d32", "#e0a100", "#b3261e"];
    const funnel = document.getElementById("funnel");
    if (funnel) {
      new Chart(funnel, {
        type: "bar",
        data: {
          labels: data.funnel.steps,
          datasets: Object.entries(data.funnel.series).map(([label, values], i) =>
            ({ label: label, data: values, backgroundColor: colours[i % colours.length] })),
        },
        options: { animation: false, responsive: true },
      });
    }
    const lift = document.getElementById("lift");
    if (lift && data.lift.length) {
      const points = (value) => Math.round(value * 1000) / 10;
      new Chart(lift, {
        type: "bar",
        data: {
          labels: data.lift.map((row) => row.label),
          datasets: [
            { type: "bar", label: "interval (percentage points)",
              data: data.lift.map((row) => [points(row.low), points(row.high)]),
              backgroundColor: "rgba(36, 87, 214, 0.25)" },
            { type: "scatter", label: "lift (percentage points)",
              data: data.lift.map((row, i) => ({ x: row.label, y: points(row.difference) })),
              backgroundColor: "#2457d6" },
          ],
        },
        options: { animation: false, indexAxis: "x",
                   scales: { y: { title: { display: true, text: "goal rate minus the holdout's" } } } },
      });
    }
  }

  function drawOverview() {
    const source = document.getElementById("overview-data");
    if (!source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const colours = ["#2457d6", "#1e7d32", "#e0a100", "#b3261e", "#7b4bd6", "#5f6b7a"];
    const line = (id, series) => new Chart(document.getElementById(id), {
      type: "line",
      data: { labels: data.days, datasets: series.map(([label, values], i) =>
        ({ label: label, data: values, borderColor: colours[i % colours.length],
           backgroundColor: colours[i % colours.length], tension: 0.2 })) },
      options: { animation: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    line("by-channel", Object.entries(data.channels));
    line("consent", [["opt-ins", data.opt_ins], ["opt-outs", data.opt_outs]]);
    line("leads", [["qualified leads", data.qualified], ["demos booked", data.demos]]);
    new Chart(document.getElementById("intents"), {
      type: "bar",
      data: { labels: data.intents.map((row) => row[0]),
              datasets: [{ label: "messages", data: data.intents.map((row) => row[1]),
                           backgroundColor: colours[0] }] },
      options: { animation: false, indexAxis: "y" },
    });
  }

  window.addEventListener("load", drawCharts);
  window.addEventListener("load", drawOverview);

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
