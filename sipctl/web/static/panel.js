// The panel's only script (no inline scripts: the Content-Security-Policy forbids them).
// Forms whose button is marked .danger ask before they submit.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  if (button && button.classList.contains("danger") && !window.confirm(button.textContent.trim() + "?")) {
    event.preventDefault();
  }
});
