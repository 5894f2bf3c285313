// A form is sent once: its button is disabled at the first submit (the one-time key on
// the server refuses a second submission anyway).
// A GET form (a filter, a PDF opened in a new tab) only reads: it may be sent again.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var method = (ev.submitter && ev.submitter.getAttribute("formmethod")) || form.method;
  if (method.toLowerCase() !== "post") return;
  if (form.dataset.sent) { ev.preventDefault(); return; }
  // a step that moves money or closes an account asks once more (data-confirm)
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { ev.preventDefault(); return; }
  form.dataset.sent = "1";
  form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
    b.disabled = true;
  });
});
