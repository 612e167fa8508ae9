// Scanner-safe scan fields (issue 13) and the bedside camera. Progressive enhancement only: without
// this script every form still posts, and the server names each wrong scan beside its field.
//
// A keyboard-wedge scanner types a label and then presses Enter. In a form marked
// `data-scan-check="<url>"`, Enter in a scan field (`data-scan`) never submits the form: the scan
// is checked at once by the URL (JSON, with the form's CSRF token) and marked right or wrong on its
// own field, and the focus moves to the next scan field (the last one keeps it, its text selected
// so that the next scan replaces it). The signature fields (password, authenticator code) and the
// submit button stay disabled until every scan typed is right, and the focus never moves into them
// by itself: nothing typed by the scanner can end up in a password field.
//
// On the bedside page, the camera button reads the label's QR code with the browser's
// BarcodeDetector where there is one, otherwise with jsQR (shipped in static/jsqr/, loaded only
// when the camera is used). No external resource: the CSP forbids it.
(function () {
  "use strict";

  var SECRETS = 'input[type="password"], input[name="otp"]';

  function list(nodes) {
    return Array.prototype.slice.call(nodes);
  }

  function setUp(form) {
    var url = form.getAttribute("data-scan-check");
    var fields = list(form.querySelectorAll("[data-scan]"));
    if (!url || !fields.length) {
      return;
    }
    list(form.querySelectorAll("[data-scan-only]")).forEach(function (part) { part.hidden = false; });
    var contexts = list(form.querySelectorAll("[data-scan-context]"));
    var secrets = list(form.querySelectorAll(SECRETS));
    var submit = form.querySelector('button[type="submit"]');
    var hint = form.querySelector("[data-scan-hint]");
    var tokenField = form.querySelector('input[name="csrf_token"]');
    var status = {}; // field id -> "right" | "wrong" | "pending" | "failed" (no answer) | ""
    var checked = {}; // field id -> the value last sent for checking
    var sent = {}; // field id -> the number of its latest check: an older answer is let go
    var pauses = {}; // field id -> its typing pause's timer (typed by hand: checked when it ends)
    // Whether Tab from the last scan field goes straight to the signature, nothing to fill in
    // between (dispensing; not the code-break forms, whose reason comes first).
    var elements = list(form.elements);
    var last = fields[fields.length - 1];
    var beforeSignature = secrets.length > 0 &&
      elements.indexOf(secrets[0]) > elements.indexOf(last) &&
      elements.slice(elements.indexOf(last) + 1, elements.indexOf(secrets[0])).every(function (e) {
        return e.type === "hidden" || e.hidden;
      });

    function verdict(field) {
      return document.getElementById(field.id + "-verdict");
    }

    function gate() {
      if (!secrets.length) {
        return; // no signature on this form (bedside): the server checks again when it is posted
      }
      var typed = fields.filter(function (f) { return f.value.trim(); });
      var ready = typed.length > 0 && typed.every(function (f) {
        return status[f.id] === "right" && checked[f.id] === f.value.trim();
      });
      secrets.forEach(function (s) { s.disabled = !ready; });
      if (submit) {
        submit.disabled = !ready;
      }
      if (hint) {
        hint.hidden = ready;
      }
      form.setAttribute("data-scans-ready", ready ? "yes" : "no");
    }

    function mark(field, state, message, notes) {
      status[field.id] = state;
      field.classList.toggle("scan-right", state === "right");
      field.classList.toggle("scan-wrong", state === "wrong");
      if (state === "wrong") {
        field.setAttribute("aria-invalid", "true");
      } else {
        field.removeAttribute("aria-invalid");
      }
      var shown = verdict(field);
      if (shown) {
        var sign = state === "right" ? (notes && notes.length ? "⚠ " : "✔ ") : state === "wrong" ? "✖ " :
          state === "failed" ? "⚠ " : "";
        shown.textContent = message ? sign + message : "";
        if (notes && notes.length) {
          shown.textContent += " — " + notes.join(" — ");
        }
        shown.className = "scan-verdict" + (state ? " " + state : "") + (notes && notes.length ? " warn" : "");
        if (message) {
          field.setAttribute("aria-describedby", shown.id);
        }
      }
      gate();
    }

    // A list of scans (shipment receipt): each right scan joins the form's list (the textarea
    // that the form posts, one kit per line) and the field is cleared for the next one; a wrong
    // one stays in the field, named, and joins nothing. Each scan is listed with its verdict,
    // the answer to a scan already followed by the next one too (`current` false: a fast scanner),
    // which then joins the list without touching the field.
    function collect(field, value, answer, current) {
      var target = document.getElementById(field.getAttribute("data-scan-collect"));
      var lines = target ? target.value.split("\n").map(function (l) { return l.trim(); }) : [];
      var repeated = answer.ok && lines.indexOf(value) >= 0;
      if (answer.ok && !repeated && target) {
        target.value = lines.filter(function (l) { return l; }).concat([value]).join("\n") + "\n";
      }
      var message = repeated ? (form.getAttribute("data-repeated") || "already scanned") : answer.message;
      var notes = answer.notes && answer.notes.length ? " — " + answer.notes.join(" — ") : "";
      listed(field, value, answer.ok && !repeated, message + notes);
      if (!current) {
        return;
      }
      if (answer.ok) {
        field.value = "";
        checked[field.id] = "";
        mark(field, "", "");
      } else {
        mark(field, "wrong", answer.message);
        field.select();
      }
    }

    function listed(field, value, right, message) {
      var log = document.getElementById(field.id + "-list");
      if (log) {
        var item = document.createElement("li");
        item.textContent = (right ? "✔ " : "✖ ") + value + " · " + message;
        item.className = right ? "right" : "wrong";
        log.insertBefore(item, log.firstChild);
      }
    }

    // The fields holding text that no check has answered yet.
    function unanswered() {
      return fields.filter(function (f) {
        return f.value.trim() && (status[f.id] === "pending" || !status[f.id]);
      });
    }

    function check(field) {
      var value = field.value.trim();
      if (!value) {
        checked[field.id] = "";
        mark(field, "", "");
        return;
      }
      if (checked[field.id] === value && status[field.id]) {
        gate();
        return;
      }
      checked[field.id] = value;
      window.clearTimeout(pauses[field.id]); // checked now: the typing pause's check is not needed
      mark(field, "pending", form.getAttribute("data-checking") || "…");
      var ticket = sent[field.id] = (sent[field.id] || 0) + 1;
      var latest = function () { return sent[field.id] === ticket && field.value.trim() === value; };
      var body = { field: field.name, scan: value };
      contexts.forEach(function (c) { body[c.name] = c.value; });
      // A check with no answer within the form's patience (10 s unless it says otherwise) is said
      // to have none: a request hanging on a weak network would otherwise leave "…" for ever, and
      // Enter would not send it again.
      var patience = Number(form.getAttribute("data-check-timeout")) || 10000;
      var stop = new AbortController();
      var timer = window.setTimeout(function () { stop.abort(); }, patience);
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "X-CSRFToken": tokenField ? tokenField.value : ""
        },
        body: JSON.stringify(body),
        signal: stop.signal
      }).then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.json();
      }).then(function (answer) {
        window.clearTimeout(timer);
        // Not the latest: the text changed, or a newer check of it was sent (a context changed).
        var current = latest();
        if (field.hasAttribute("data-scan-collect")) {
          collect(field, value, answer, current);
        } else if (current) {
          mark(field, answer.ok ? "right" : "wrong", answer.message, answer.notes);
        }
      }).catch(function () {
        // No answer (the network, a busy server, a session that ended: its sign-in page is not
        // JSON): said beside the field, which stays unchecked, so the signature stays closed and
        // Enter checks it again (so does leaving the field once its text is changed).
        window.clearTimeout(timer);
        var words = form.getAttribute("data-check-failed") || "";
        if (field.hasAttribute("data-scan-collect")) {
          listed(field, value, false, words); // in the list of scans, not in the posted list
        }
        if (latest()) {
          checked[field.id] = "";
          mark(field, "failed", words);
        }
      });
    }

    fields.forEach(function (field, index) {
      field.addEventListener("keydown", function (event) {
        if (event.key === "Tab" && !event.shiftKey && field === last && beforeSignature &&
            unanswered().length) {
          // A scan typed and not answered yet (this one or another): the signature is closed, so
          // Tab would skip it and leave the form (into the next form's fields, where a password
          // typed next would go). The scans are checked and the focus stays; once they are
          // answered, Tab goes on (after a check with no answer too: the field says so).
          event.preventDefault();
          unanswered().forEach(check);
          field.select();
          return;
        }
        if (event.key !== "Enter") {
          return;
        }
        event.preventDefault(); // Enter in a scan field never submits the form
        check(field);
        var next = fields[index + 1];
        if (next) {
          next.focus();
          next.select();
        } else {
          field.select(); // the next scan replaces this one, and goes nowhere else
        }
      });
      field.addEventListener("change", function () { check(field); });
      field.addEventListener("input", function () {
        // A scan typed or changed is unchecked until its check answers: the signature closes at
        // once. Left open, the pharmacist could click into the password while this field still
        // waited for its check; the check that the click's blur starts then closed the password
        // under the click, the focus stayed here, and the password was typed into the scan field.
        if (field.value.trim() !== checked[field.id]) {
          mark(field, "", "");
        }
        // Typed by hand (no Enter): checked once the typing pauses.
        window.clearTimeout(pauses[field.id]);
        pauses[field.id] = window.setTimeout(function () { check(field); }, 700);
      });
    });

    contexts.forEach(function (context) {
      if (context.tagName === "INPUT") {
        context.addEventListener("keydown", function (event) {
          if (event.key === "Enter") { // a scanned wristband: on to the label, never submitted
            event.preventDefault();
            fields[0].focus();
            fields[0].select();
          }
        });
      }
      context.addEventListener("change", function () {
        fields.forEach(function (f) {
          checked[f.id] = "";
          if (f.value.trim()) {
            check(f);
          }
        });
      });
    });

    form.addEventListener("submit", function (event) {
      if (secrets.length && form.getAttribute("data-scans-ready") !== "yes") {
        event.preventDefault();
      }
    });

    // A form sent back by the server keeps what was scanned: the scans it refused stay marked
    // (not checked again, which would audit them twice); the others are checked now.
    fields.forEach(function (field) {
      if (field.getAttribute("aria-invalid") === "true") {
        status[field.id] = "wrong";
        checked[field.id] = field.value.trim();
        field.classList.add("scan-wrong");
      } else if (field.value.trim()) {
        check(field);
      }
    });
    gate();
    form.scanCheck = check; // for the camera
  }

  // --- the camera (bedside) -------------------------------------------------------------------

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      if (window.jsQR) {
        resolve();
        return;
      }
      var script = document.createElement("script");
      script.src = src;
      script.onload = function () { resolve(); };
      script.onerror = function () { reject(new Error("decoder")); };
      document.head.appendChild(script);
    });
  }

  // A function video -> Promise of the QR text (or null), and the decoder's name.
  function decoder(button) {
    if ("BarcodeDetector" in window) {
      return window.BarcodeDetector.getSupportedFormats().then(function (formats) {
        if (formats.indexOf("qr_code") < 0) {
          throw new Error("no qr_code");
        }
        var detector = new window.BarcodeDetector({ formats: ["qr_code"] });
        return {
          name: "BarcodeDetector",
          read: function (video) {
            return detector.detect(video).then(function (codes) { return codes.length ? codes[0].rawValue : null; });
          }
        };
      }).catch(function () { return fallback(button); });
    }
    return fallback(button);
  }

  function fallback(button) {
    return loadScript(button.getAttribute("data-decoder")).then(function () {
      var canvas = document.createElement("canvas");
      var context = canvas.getContext("2d", { willReadFrequently: true });
      return {
        name: "jsQR",
        read: function (video) {
          var width = video.videoWidth;
          var height = video.videoHeight;
          if (!width || !height) {
            return Promise.resolve(null);
          }
          canvas.width = width;
          canvas.height = height;
          context.drawImage(video, 0, 0, width, height);
          var image = context.getImageData(0, 0, width, height);
          var code = window.jsQR(image.data, width, height, { inversionAttempts: "dontInvert" });
          return Promise.resolve(code ? code.data : null);
        }
      };
    });
  }

  function camera() {
    var button = document.getElementById("camera");
    var field = document.getElementById("payload");
    var video = document.getElementById("preview");
    if (!button || !field || !video || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      decoder(button).then(function (reader) {
        button.setAttribute("data-decoder-used", reader.name);
        return navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then(function (stream) {
          video.srcObject = stream;
          video.hidden = false;
          video.play();
          var stop = function () {
            stream.getTracks().forEach(function (track) { track.stop(); });
            video.hidden = true;
          };
          var look = function () {
            reader.read(video).then(function (text) {
              if (text) {
                stop();
                field.value = text;
                if (field.form && field.form.scanCheck) {
                  field.form.scanCheck(field);
                }
                field.focus();
              } else {
                window.setTimeout(look, 150);
              }
            }).catch(stop);
          };
          look();
        });
      }).catch(function () { button.hidden = true; });
    });
  }

  list(document.querySelectorAll("form[data-scan-check]")).forEach(setUp);
  camera();
})();
