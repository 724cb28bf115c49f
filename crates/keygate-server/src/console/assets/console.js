// keygate's console script: comfort only. Every page works without it.
"use strict";
// The controls that only work with this script are hidden in the page until it runs.
document.querySelectorAll("[data-copy], [data-select-all]").forEach((control) => {
  control.hidden = false;
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  // Without the clipboard (a page not served over HTTPS or from localhost), the text is
  // selected for the person to copy.
  const select = () => {
    window.getSelection().selectAllChildren(source);
    button.textContent = "Selected: press Ctrl+C";
  };
  if (!navigator.clipboard) return select();
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
  }, select);
});
document.addEventListener("change", (event) => {
  const all = event.target.closest("[data-select-all]");
  if (!all) return;
  document
    .querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)
    .forEach((box) => { box.checked = all.checked; });
});
// Ticking an event on a webhook's form means "only the events ticked here".
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!box.matches("input[type=checkbox][name=event]") || !box.checked) return;
  const only = box.form && box.form.querySelector("input[data-only]");
  if (only) only.checked = true;
});
