// A form is sent once: its button is disabled at the first submit (the one-time key on
// the server refuses a second submission anyway).
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (form.dataset.sent) { ev.preventDefault(); return; }
  form.dataset.sent = "1";
  form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
    b.disabled = true;
  });
});
