// Each player (an <audio>/<video> with data-cues naming its list of .cue lines): a click on a line
// (or on a minutes citation, an <a data-seek="seconds"> in the page) seeks there, the line being spoken is highlighted, data-start (?t=) starts there; one plays at a time.
"use strict";
(function () {
  const players = Array.from(document.querySelectorAll("audio[data-cues], video[data-cues]"));
  const sync = (player) => {
    const list = document.getElementById(player.dataset.cues);
    const cues = list ? Array.from(list.querySelectorAll(".cue")) : [];
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
    if (player === players[0]) {
      document.querySelectorAll("a[data-seek]").forEach((link) => {
        link.addEventListener("click", (e) => {
          e.preventDefault();
          seek(parseFloat(link.dataset.seek));
          player.play().catch(() => {});
        });
      });
    }
    player.addEventListener("timeupdate", highlight);
    player.addEventListener("seeked", highlight);
    player.addEventListener("play", () => players.forEach((other) => { if (other !== player) other.pause(); }));
    const start = parseFloat(player.dataset.start || "0");
    if (start > 0) {
      if (player.readyState >= 1) seek(start);
      else player.addEventListener("loadedmetadata", () => seek(start), { once: true });
    }
  };
  players.forEach(sync);
})();
