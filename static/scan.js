// Bedside camera scanning, as progressive enhancement: a keyboard-wedge scanner (or typing)
// always works; where the browser offers the BarcodeDetector API (Chrome on Android) a button
// reads the QR code with the phone's camera and fills the field. No external resource (CSP).
(function () {
  "use strict";
  var button = document.getElementById("camera");
  var field = document.getElementById("payload");
  var video = document.getElementById("preview");
  if (!button || !field || !video || !("BarcodeDetector" in window) || !navigator.mediaDevices) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    var detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then(function (stream) {
      video.srcObject = stream;
      video.hidden = false;
      video.play();
      var stop = function () {
        stream.getTracks().forEach(function (track) { track.stop(); });
        video.hidden = true;
      };
      var look = function () {
        detector.detect(video).then(function (codes) {
          if (codes.length) {
            field.value = codes[0].rawValue;
            stop();
            field.form.requestSubmit();
          } else {
            window.requestAnimationFrame(look);
          }
        }).catch(stop);
      };
      look();
    }).catch(function () { button.hidden = true; });
  });
})();
