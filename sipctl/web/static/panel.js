// The panel's only script (no inline scripts: the Content-Security-Policy forbids them).
// Forms whose button is marked .danger ask before they submit.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  if (button && button.classList.contains("danger") && !window.confirm(button.textContent.trim() + "?")) {
    event.preventDefault();
  }
});
// Live pages (Dialog) carry #refresh with a number of seconds: reload them that often.
document.addEventListener("DOMContentLoaded", function () {
  var marker = document.getElementById("refresh");
  var seconds = marker ? parseInt(marker.getAttribute("data-seconds"), 10) : 0;
  if (seconds > 0) {
    window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
  }
});
