// The console's only script: the board's live stream and the clocks. Every page works
// without it (the server renders the same text; reload for news).
"use strict";

function duration(seconds) {
  const s = Math.floor(Math.abs(seconds));
  const sign = seconds < 0 ? "-" : "";
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${sign}${s} s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${sign}${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  return `${sign}${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-ago]")) {
    el.textContent = `${duration((now - Date.parse(el.dateTime)) / 1000)} ago`;
  }
  for (const el of document.querySelectorAll("time[data-countdown]")) {
    const left = (Date.parse(el.dateTime) - now) / 1000;
    el.textContent = left > 0 ? duration(left) : "any moment";
  }
  for (const el of document.querySelectorAll("time[data-due]")) {
    const left = (Date.parse(el.dateTime) - now) / 1000;
    el.textContent = left >= 0 ? `due in ${duration(left)}` : `overdue by ${duration(-left)}`;
    el.classList.toggle("bad", left < 0);
    el.classList.toggle("warn", left >= 0 && left < 300);
    el.classList.toggle("good", left >= 300);
  }
}

function follow(board) {
  const status = document.getElementById("live-status");
  const text = status && status.querySelector(".live-text");
  const say = (online, words) => {
    if (!status) return;
    status.classList.toggle("online", online);
    status.classList.toggle("offline", !online);
    text.textContent = words;
  };
  const stream = new EventSource(board.dataset.stream);
  stream.addEventListener("open", () => say(true, "Live"));
  stream.addEventListener("error", () => say(false, "Reconnecting…"));
  stream.addEventListener("board", (e) => {
    // Keep the keyboard focus on the same control across the update.
    const focused = document.activeElement && document.activeElement.id;
    board.innerHTML = e.data;
    const again = focused && document.getElementById(focused);
    if (again) again.focus();
    tick();
    say(true, `Live · updated ${new Date().toLocaleTimeString()}`);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const board = document.getElementById("board-live");
  if (board && window.EventSource) follow(board);
  tick();
  setInterval(tick, 1000);
});
