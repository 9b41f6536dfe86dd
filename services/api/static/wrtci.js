// wrtci web pages: the little that needs a script. Every page works without it.
// - a running job's console log grows live (Server-Sent Events), and its stage shows;
// - filter forms apply when a choice changes.
"use strict";

(function () {
  var ESCAPES = /\x1b\[[0-9;?]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f]/g;

  function liveLog(box) {
    if (!window.EventSource) { return; }
    var line = parseInt(box.getAttribute("data-next-line") || "1", 10);
    var partial = box.getAttribute("data-partial") === "1";
    var stage = document.getElementById("stage");
    var status = document.getElementById("live-status");
    var url = box.getAttribute("data-live");
    var after = box.getAttribute("data-after");
    if (after) { url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(after); }

    function newLine() {
      var div = document.createElement("div");
      div.id = "L" + line;
      var a = document.createElement("a");
      a.className = "n";
      a.href = "#L" + line;
      a.textContent = String(line);
      div.appendChild(a);
      div.appendChild(document.createTextNode(""));
      box.appendChild(div);
      line += 1;
      return div;
    }

    function append(text) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      var pieces = text.replace(/\r\n/g, "\n").split("\n");
      for (var i = 0; i < pieces.length; i++) {
        if (i > 0) { partial = false; }
        if (i === pieces.length - 1 && pieces[i] === "") { break; }
        var div = partial && box.lastElementChild ? box.lastElementChild : newLine();
        var piece = pieces[i];
        if (piece.indexOf("\r") >= 0) {  // a redraw: what the terminal shows last
          div.lastChild.textContent = "";
          piece = piece.slice(piece.lastIndexOf("\r") + 1);
        }
        div.lastChild.textContent += piece.replace(ESCAPES, "");
        partial = true;
      }
      if (text.charAt(text.length - 1) === "\n") { partial = false; }
      if (atBottom) { window.scrollTo(0, document.body.scrollHeight); }
    }

    var source = new EventSource(url);
    if (status) { status.textContent = "live"; }
    source.addEventListener("text", function (e) { append(JSON.parse(e.data)); });
    source.addEventListener("reset", function () {
      while (box.firstChild) { box.removeChild(box.firstChild); }
      line = 1;
      partial = false;
    });
    source.addEventListener("stage", function (e) {
      if (stage) { stage.textContent = JSON.parse(e.data); }
    });
    source.addEventListener("end", function () {
      source.close();
      if (status) { status.textContent = "finished, reloading"; }
      window.setTimeout(function () { window.location.reload(); }, 1500);
    });
    source.onerror = function () { if (status) { status.textContent = "reconnecting"; } };
  }

  function ready() {
    var boxes = document.querySelectorAll("[data-live]");
    for (var i = 0; i < boxes.length; i++) { liveLog(boxes[i]); }
    var selects = document.querySelectorAll("form.filters select");
    for (var j = 0; j < selects.length; j++) {
      selects[j].addEventListener("change", function (e) { e.target.form.submit(); });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
