// Upload page: collects files from the file pickers or a drag-and-drop (folders included), posts
// them as multipart with XMLHttpRequest so that upload.onprogress can drive the progress bar, then
// goes to the upload's result page. Without JavaScript the form posts normally.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var zone = document.getElementById("dropzone");
  var pickers = [document.getElementById("id_files"), document.getElementById("id_folder")];
  var chosenText = document.getElementById("chosen");
  var box = document.getElementById("upload-progress");
  var bar = document.getElementById("upload-bar");
  var text = document.getElementById("upload-text");
  var errorBox = document.getElementById("upload-error");
  var submit = document.getElementById("upload-submit");
  var dropped = []; // [{file, path}] from drag-and-drop

  function humanSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KB";
    if (bytes < 1073741824) return (bytes / 1048576).toFixed(1) + " MB";
    return (bytes / 1073741824).toFixed(2) + " GB";
  }

  function allFiles() {
    var files = dropped.slice();
    pickers.forEach(function (input) {
      Array.prototype.forEach.call(input.files || [], function (f) {
        files.push({ file: f, path: f.webkitRelativePath || f.name });
      });
    });
    return files;
  }

  function refreshChosen() {
    var files = allFiles();
    if (!files.length) { chosenText.textContent = "No file chosen."; return; }
    var total = files.reduce(function (sum, f) { return sum + f.file.size; }, 0);
    var names = files.slice(0, 3).map(function (f) { return f.path; }).join(", ");
    chosenText.textContent = files.length + " file" + (files.length === 1 ? "" : "s") + " (" + humanSize(total) + "): " +
      names + (files.length > 3 ? ", …" : "");
  }

  pickers.forEach(function (input) { input.addEventListener("change", refreshChosen); });

  // Drag and drop, walking dropped folders recursively.
  function walk(entry, prefix, out) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (f) { out.push({ file: f, path: prefix + f.name }); resolve(); }, function () { resolve(); });
      } else if (entry.isDirectory) {
        var reader = entry.createReader();
        var readBatch = function () {
          reader.readEntries(function (entries) {
            if (!entries.length) { resolve(); return; }
            Promise.all(entries.map(function (e) { return walk(e, prefix + entry.name + "/", out); })).then(readBatch);
          }, function () { resolve(); });
        };
        readBatch();
      } else { resolve(); }
    });
  }
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (e) {
    var items = e.dataTransfer.items;
    var out = [];
    var jobs = [];
    if (items && items.length && items[0].webkitGetAsEntry) {
      Array.prototype.forEach.call(items, function (item) {
        var entry = item.webkitGetAsEntry();
        if (entry) jobs.push(walk(entry, "", out));
      });
    } else {
      Array.prototype.forEach.call(e.dataTransfer.files, function (f) { out.push({ file: f, path: f.name }); });
    }
    Promise.all(jobs).then(function () { dropped = dropped.concat(out); refreshChosen(); });
  });

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    box.hidden = true;
    submit.disabled = false;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    errorBox.hidden = true;
    var files = allFiles();
    if (!files.length) { fail("Choose at least one file: a .zip, .dcm files, a folder, or a .nii.gz."); return; }
    // The server refuses these outright; say so before sending gigabytes.
    var maxFiles = parseInt(form.dataset.maxFiles, 10);
    var maxBytes = parseInt(form.dataset.maxTotalMb, 10) * 1048576;
    var total = files.reduce(function (sum, f) { return sum + f.file.size; }, 0);
    if (maxFiles && files.length > maxFiles) {
      fail(files.length + " files is more than the " + maxFiles + " files one upload may hold: upload a .zip, or the folder in parts.");
      return;
    }
    if (maxBytes && total > maxBytes) {
      fail("These files are " + humanSize(total) + ", more than the " + humanSize(maxBytes) + " one upload may hold: upload them in parts.");
      return;
    }
    var data = new FormData();
    data.append("csrfmiddlewaretoken", form.elements.csrfmiddlewaretoken.value);
    data.append("team", form.elements.team.value);
    data.append("patient_identifier", form.elements.patient_identifier.value);
    files.forEach(function (f) { data.append("files", f.file, f.path); });

    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (ev) {
      if (!ev.lengthComputable) return;
      var pct = Math.round((ev.loaded / ev.total) * 100);
      bar.style.width = pct + "%";
      bar.parentNode.setAttribute("aria-valuenow", String(pct));
      text.textContent = "Uploading " + humanSize(ev.loaded) + " of " + humanSize(ev.total) + " (" + pct + " %)";
    };
    xhr.upload.onload = function () {
      bar.style.width = "100%";
      text.textContent = "Upload complete. Checking and storing " + files.length + " file" + (files.length === 1 ? "" : "s") + "…";
    };
    xhr.onload = function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300 && body && body.url) {
        text.textContent = "Done. Opening the result…";
        window.location.assign(body.url);
      } else if (body && body.errors) {
        var parts = [];
        Object.keys(body.errors).forEach(function (k) { parts = parts.concat(body.errors[k]); });
        fail(parts.join(" "));
      } else if (body && body.error) {
        fail(body.error);
      } else {
        fail("The upload failed (HTTP " + xhr.status + "). Please try again or contact your administrator.");
      }
    };
    xhr.onerror = function () { fail("The upload was interrupted: the server could not be reached."); };
    box.hidden = false;
    submit.disabled = true;
    bar.style.width = "0%";
    text.textContent = "Starting upload…";
    xhr.send(data);
  });
})();
