// "Choose the subject, don't type it" (issue 13): the subject chosen in a list is shown back, large,
// beside the confirmation, so that the number is read once more before the blind is broken.
// Progressive enhancement only: without it the server shows the subject chosen before (?subject=).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("select[data-chosen]").forEach(function (select) {
    var shown = document.getElementById(select.getAttribute("data-chosen"));
    if (!shown) { return; }
    var update = function () {
      shown.textContent = select.value || shown.getAttribute("data-none") || "";
    };
    select.addEventListener("change", update);
    update();
  });
});
