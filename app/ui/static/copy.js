// Copy buttons: a button with data-copy="ID" copies the value of the input #ID to the clipboard.
// The buttons are rendered hidden and shown here only when the clipboard can be written (a
// secure context); without JavaScript the readonly input can still be selected and copied.
(function () {
  "use strict";
  const canCopy = !!(navigator.clipboard && navigator.clipboard.writeText);

  function reveal(root) {
    if (!canCopy) return;
    root.querySelectorAll("button[data-copy][hidden]").forEach(function (button) {
      button.hidden = false;
    });
  }

  function say(button, text) {
    const status = button.parentElement && button.parentElement.querySelector("output");
    if (status) status.textContent = text;
    clearTimeout(button._copyTimer);
    button._copyTimer = setTimeout(function () { if (status) status.textContent = ""; }, 3000);
  }

  document.addEventListener("click", function (event) {
    const button = event.target instanceof Element && event.target.closest("button[data-copy]");
    if (!button) return;
    const input = document.getElementById(button.dataset.copy);
    if (!input) return;
    event.preventDefault();
    input.select();
    if (!canCopy) return;
    navigator.clipboard.writeText(input.value).then(
      function () { say(button, "Copied"); },
      function () { say(button, "Select the text and copy it"); }
    );
  });

  // A click into a readonly value selects all of it, ready to copy by hand.
  document.addEventListener("focusin", function (event) {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.readOnly && input.closest(".copy")) input.select();
  });

  reveal(document);
  // Pages swapped in by htmx (boosted links and forms) bring their own buttons.
  document.addEventListener("htmx:load", function (event) { reveal(event.target); });
})();
