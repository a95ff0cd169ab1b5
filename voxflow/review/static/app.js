// Transcript lines seek the player; the line being spoken is highlighted; ?t= starts there.
"use strict";
(function () {
  const player = document.getElementById("player");
  const cues = Array.from(document.querySelectorAll(".cue"));
  if (!player) return;
  const seek = (seconds) => { player.currentTime = seconds; };
  cues.forEach((cue) => {
    const go = () => { seek(parseFloat(cue.dataset.start)); player.play().catch(() => {}); };
    cue.addEventListener("click", go);
    cue.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  });
  const highlight = () => {
    const t = player.currentTime;
    cues.forEach((cue) => {
      const on = t >= parseFloat(cue.dataset.start) && t < parseFloat(cue.dataset.end);
      cue.classList.toggle("current", on);
    });
  };
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);
  const start = parseFloat(player.dataset.start || "0");
  if (start > 0) {
    if (player.readyState >= 1) seek(start);
    else player.addEventListener("loadedmetadata", () => seek(start), { once: true });
  }
})();
