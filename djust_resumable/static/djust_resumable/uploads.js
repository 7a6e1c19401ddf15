/*
 * djust_resumable browser client (plain JS, no build step).
 *
 * Load it in the base template, before or after djust's client:
 *     <script src="{% static 'djust_resumable/uploads.js' %}"></script>
 *
 * It replaces `window.djust.uploads` with a compatible object. djust's own object is kept
 * (whatever the load order: `window.djust.uploads` is an accessor property whose setter keeps
 * djust's object) and serves every slot that is not resumable. Slots whose config (shipped
 * by the mount message, see djust_resumable/mixin.py) carries `resumable: true` are served
 * here: bytes go to djust_resumable's upload WebSocket (`config.endpoint`), never through
 * the LiveView socket. Protocol: docs/protocol.md.
 *
 *  - files are streamed with Blob.slice (never read whole), at most `window` bytes beyond
 *    the server's durable offset, in frames of at most `max_frame` bytes;
 *  - CRC32C of the whole file is computed as slices are sent and sent with `finish`;
 *  - a dropped connection (or a retryable error) reconnects with exponential backoff and
 *    `resume`s at the server's durable offset;
 *  - `djust:upload:progress` / `djust:upload:error` are dispatched on window like djust's;
 *  - completion is told to the LiveView through djust's public `window.djust.handleEvent`:
 *    an element `[dj-upload="slot"]` or `[dj-upload-drop="slot"]` carrying
 *    `dj-upload-complete="handler"` gets `handler(upload_name, ref, client_name,
 *    client_size)` called once the object is complete in storage (the entry is then in the
 *    ledger, so `consume_uploaded_entries` finds it); `dj-upload-error="handler"` gets
 *    `handler(upload_name, code, message, client_name, client_size)` when an upload is
 *    refused (client-side size check or a non-retryable server error). Without these
 *    attributes nothing is sent: the next event of the view (e.g. the form's dj-submit)
 *    finds the completed entry, as with djust's own client.
 */
(function () {
    'use strict';

    var FRAME_DATA = 0x01;
    var HEADER = 25;
    var BACKOFF_INITIAL = 500;
    var BACKOFF_MAX = 15000;
    var CRC_SLICE = 4 * 1024 * 1024;

    // ------------------------------------------------------------------ CRC32C (Castagnoli)
    var CRC_TABLE = (function () {
        var t = new Uint32Array(256);
        for (var i = 0; i < 256; i++) {
            var c = i;
            for (var k = 0; k < 8; k++) c = (c & 1) ? (0x82F63B78 ^ (c >>> 1)) : (c >>> 1);
            t[i] = c >>> 0;
        }
        return t;
    })();

    /** Extend `crc` (the CRC32C of the bytes so far, 0 for none) with `bytes`. */
    function crc32c(crc, bytes) {
        var c = (crc ^ 0xFFFFFFFF) >>> 0;
        for (var i = 0, n = bytes.length; i < n; i++) {
            c = CRC_TABLE[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
        }
        return (c ^ 0xFFFFFFFF) >>> 0;
    }

    async function crcPrefix(file, end) {
        var crc = 0;
        for (var pos = 0; pos < end; pos += CRC_SLICE) {
            var buf = await file.slice(pos, Math.min(end, pos + CRC_SLICE)).arrayBuffer();
            crc = crc32c(crc, new Uint8Array(buf));
        }
        return crc;
    }

    // ------------------------------------------------------------------ helpers
    function refToBytes(ref) {
        var hex = String(ref || '').replace(/-/g, '');
        var out = new Uint8Array(16);
        for (var i = 0; i < 16; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
        return out;
    }

    function emit(name, detail) {
        window.dispatchEvent(new CustomEvent(name, { detail: detail }));
    }

    function formatSize(bytes) {
        if (bytes < 1024) return bytes + ' B';
        if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + ' KB';
        return (bytes / (1024 * 1024)).toFixed(1) + ' MB';
    }

    function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

    async function fingerprint(file) {
        var base = 'v1:' + file.size + ':' + (file.lastModified || 0);
        try {
            if (!(window.crypto && crypto.subtle)) return base;
            var MiB = 1024 * 1024;
            var head = await file.slice(0, Math.min(file.size, MiB)).arrayBuffer();
            var tail = await file.slice(Math.max(0, file.size - MiB)).arrayBuffer();
            var both = new Uint8Array(head.byteLength + tail.byteLength);
            both.set(new Uint8Array(head), 0);
            both.set(new Uint8Array(tail), head.byteLength);
            var digest = new Uint8Array(await crypto.subtle.digest('SHA-256', both));
            var hex = Array.from(digest, function (b) { return b.toString(16).padStart(2, '0'); });
            return base + ':' + hex.join('').slice(0, 32);
        } catch (_e) {
            return base;
        }
    }

    function cssEscape(s) {
        return (window.CSS && CSS.escape) ? CSS.escape(s) : String(s).replace(/"/g, '\\"');
    }

    /** The view handler named by `attr` on the slot's input or drop zone, or null. */
    function slotHandler(uploadName, attr) {
        var n = cssEscape(uploadName);
        var el = document.querySelector('[dj-upload="' + n + '"][' + attr + '], [dj-upload-drop="' +
                                        n + '"][' + attr + ']');
        return el ? { name: el.getAttribute(attr), el: el } : null;
    }

    function notifyView(uploadName, attr, params) {
        var h = slotHandler(uploadName, attr);
        if (!h || !h.name || !window.djust || typeof window.djust.handleEvent !== 'function') return;
        params._targetElement = h.el;
        try {
            var p = window.djust.handleEvent(h.name, params);
            if (p && p.catch) p.catch(function (e) { console.error('[djust_resumable]', e); });
        } catch (e) {
            console.error('[djust_resumable] %s handler failed: %o', h.name, e);
        }
    }

    // ------------------------------------------------------------------ state
    var original = null;      // djust's own window.djust.uploads
    var configs = {};
    var uploads = new Map();  // local id (then server ref) -> Upload
    var nextLocal = 1;

    function isResumable(uploadName) {
        var c = configs[uploadName];
        return !!(c && c.resumable && c.endpoint);
    }

    // ------------------------------------------------------------------ progress UI
    function setProgress(up, percent) {
        percent = Math.max(0, Math.min(100, Math.floor(percent)));
        if (percent === up.shownPercent) return;
        up.shownPercent = percent;
        var els = document.querySelectorAll('[dj-upload-progress="' + cssEscape(up.uploadName) + '"]');
        els.forEach(function (el) {
            if (el.tagName === 'PROGRESS') {
                el.max = 100;
                el.value = percent;
                return;
            }
            // djust's progress markup in a container, one item per upload.
            var item = el.querySelector('[data-upload-local="' + up.localId + '"]');
            if (!item) {
                item = document.createElement('div');
                item.className = 'upload-progress-item';
                item.setAttribute('data-upload-local', String(up.localId));
                item.innerHTML = '<span class="upload-progress-name"></span>' +
                    '<div class="upload-progress-track"><div class="upload-progress-bar" ' +
                    'role="progressbar" aria-valuemin="0" aria-valuemax="100"></div></div>' +
                    '<span class="upload-progress-text"></span>';
                item.querySelector('.upload-progress-name').textContent = up.file.name;
                el.appendChild(item);
            }
            if (up.ref) item.setAttribute('data-upload-ref', up.ref);
            var bar = item.querySelector('.upload-progress-bar');
            bar.style.width = percent + '%';
            bar.setAttribute('aria-valuenow', String(percent));
            item.querySelector('.upload-progress-text').textContent = percent + '%';
        });
        emit('djust:upload:progress', {
            ref: up.ref, progress: percent, status: percent >= 100 && up.done ? 'complete' : 'uploading',
            uploadName: up.uploadName, file: up.file.name, mode: 'resumable'
        });
    }

    async function showPreviews(uploadName, files) {
        var containers = document.querySelectorAll('[dj-upload-preview="' + cssEscape(uploadName) + '"]');
        containers.forEach(function (container) {
            container.innerHTML = '';
            files.forEach(function (file) {
                var wrapper = document.createElement('div');
                wrapper.className = 'upload-preview-item';
                if (file.type && file.type.indexOf('image/') === 0) {
                    var img = document.createElement('img');
                    img.src = URL.createObjectURL(file);  // no read of the file
                    img.alt = file.name;
                    img.className = 'upload-preview-image';
                    wrapper.appendChild(img);
                }
                var name = document.createElement('span');
                name.className = 'upload-preview-name';
                name.textContent = file.name;
                wrapper.appendChild(name);
                var size = document.createElement('span');
                size.className = 'upload-preview-size';
                size.textContent = formatSize(file.size);
                wrapper.appendChild(size);
                container.appendChild(wrapper);
            });
        });
    }

    // ------------------------------------------------------------------ one upload
    function Upload(uploadName, file) {
        this.uploadName = uploadName;
        this.file = file;
        this.localId = nextLocal++;
        this.ref = null;
        this.refHead = null;      // 17 bytes: type + ref
        this.ws = null;
        this.pos = 0;             // next byte to send
        this.durable = 0;
        this.received = 0;
        this.window = 8 * 1024 * 1024;
        this.maxFrame = 1024 * 1024;
        this.crc = 0;             // CRC32C of [0, crcPos)
        this.crcPos = 0;
        this.checkpoints = new Map();  // offset -> crc of [0, offset) (frame boundaries)
        this.failures = 0;
        this.done = false;
        this.failed = false;
        this.cancelled = false;
        this.finishSent = false;
        this.pumping = false;
        this.gen = 0;             // connection generation: stale sockets are ignored
        this.shownPercent = -1;
        this.fp = null;
        var self = this;
        this.promise = new Promise(function (res, rej) { self.resolve = res; self.reject = rej; });
    }

    Upload.prototype.config = function () { return configs[this.uploadName] || {}; };

    Upload.prototype.start = async function () {
        this.fp = await fingerprint(this.file);
        setProgress(this, 0);
        this.connect();
        return this.promise;
    };

    Upload.prototype.url = function () {
        var ep = this.config().endpoint || '/ws/djust-resumable/';
        if (/^wss?:\/\//.test(ep)) return ep;
        return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + ep;
    };

    Upload.prototype.connect = function () {
        if (this.done || this.failed || this.cancelled) return;
        var self = this;
        var gen = ++this.gen;
        var ws;
        try {
            ws = new WebSocket(this.url());
        } catch (e) {
            this.retry(null);
            return;
        }
        ws.binaryType = 'arraybuffer';
        this.ws = ws;
        ws.onopen = function () {
            if (gen !== self.gen) return;
            var token = self.config().token;
            if (self.ref) {
                ws.send(JSON.stringify({ type: 'resume', id: 'r' + gen, token: token, ref: self.ref,
                                         fingerprint: self.fp }));
            } else {
                ws.send(JSON.stringify({ type: 'open', id: 'o' + gen, token: token,
                                         name: self.file.name, size: self.file.size,
                                         content_type: self.file.type || 'application/octet-stream',
                                         fingerprint: self.fp }));
            }
        };
        ws.onmessage = function (ev) {
            if (gen !== self.gen || typeof ev.data !== 'string') return;
            var msg;
            try { msg = JSON.parse(ev.data); } catch (_e) { return; }
            self.onMessage(msg, gen);
        };
        ws.onclose = function () {
            if (gen !== self.gen) return;
            self.ws = null;
            if (!self.done && !self.failed && !self.cancelled) self.retry(null);
        };
        ws.onerror = function () { /* onclose follows */ };
    };

    Upload.prototype.retry = function (after) {
        if (this.retryTimer) return;
        this.gen++;  // ignore the old socket from now on
        if (this.ws) { try { this.ws.close(); } catch (_e) { /* closed */ } this.ws = null; }
        this.failures++;
        var delay = Math.min(BACKOFF_MAX, BACKOFF_INITIAL * Math.pow(2, Math.min(this.failures - 1, 10)));
        if (after) delay = Math.min(delay, after * 1000);
        delay = delay * (0.5 + Math.random() / 2);
        var self = this;
        this.retryTimer = setTimeout(function () { self.retryTimer = null; self.connect(); }, delay);
    };

    Upload.prototype.onMessage = function (msg, gen) {
        switch (msg.type) {
        case 'ready':
            this.onReady(msg, gen);
            break;
        case 'progress':
        case 'ack':
            if (msg.ref !== this.ref) return;
            this.received = Math.max(this.received, Number(msg.received) || 0);
            var d = Number(msg.durable) || 0;
            if (d > this.durable) {
                this.durable = d;
                this.failures = 0;
                this.pruneCheckpoints();
            }
            setProgress(this, this.file.size ? (this.received * 100 / this.file.size) : 0);
            if (this.received >= this.file.size) setProgress(this, 99);
            this.pump(gen);
            break;
        case 'done':
            this.onDone(msg);
            break;
        case 'error':
            this.onError(msg);
            break;
        default:
            break;
        }
    };

    Upload.prototype.onReady = async function (msg, gen) {
        this.ref = msg.ref;
        uploads.set(this.ref, this);
        this.refHead = new Uint8Array(17);
        this.refHead[0] = FRAME_DATA;
        this.refHead.set(refToBytes(this.ref), 1);
        var offset = Number(msg.offset) || 0;
        this.window = Number(msg.window) || this.window;
        this.maxFrame = Number(msg.max_frame) || this.maxFrame;
        this.durable = offset;
        this.received = offset;
        this.finishSent = false;
        // CRC of the prefix [0, offset): the running one, a checkpoint, or recomputed.
        if (offset !== this.crcPos) {
            if (this.checkpoints.has(offset)) {
                this.crc = this.checkpoints.get(offset);
            } else {
                this.crc = await crcPrefix(this.file, offset);
            }
            this.crcPos = offset;
        }
        this.pos = offset;
        if (gen !== this.gen) return;
        setProgress(this, this.file.size ? offset * 100 / this.file.size : 0);
        this.pump(gen);
    };

    Upload.prototype.pruneCheckpoints = function () {
        var self = this;
        this.checkpoints.forEach(function (_v, k) { if (k < self.durable) self.checkpoints.delete(k); });
    };

    Upload.prototype.pump = async function (gen) {
        if (this.pumping || gen !== this.gen || this.done || this.failed || this.cancelled) return;
        this.pumping = true;
        try {
            var size = this.file.size;
            while (gen === this.gen && this.ws && this.ws.readyState === WebSocket.OPEN) {
                if (this.pos >= size) {
                    if (!this.finishSent) {
                        this.finishSent = true;
                        this.ws.send(JSON.stringify({ type: 'finish', ref: this.ref, crc32c: this.crc >>> 0 }));
                    }
                    return;
                }
                var room = this.window - (this.pos - this.durable);
                if (room <= 0) return;  // wait for an ack (onMessage calls pump again)
                if (this.ws.bufferedAmount > 4 * this.maxFrame) {
                    await sleep(10);
                    continue;
                }
                var n = Math.min(this.maxFrame, size - this.pos, room);
                var start = this.pos;
                var buf = new Uint8Array(await this.file.slice(start, start + n).arrayBuffer());
                if (gen !== this.gen || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
                if (buf.length !== n) throw new Error('file changed during upload');
                var frame = new Uint8Array(HEADER + n);
                frame.set(this.refHead, 0);
                var dv = new DataView(frame.buffer);
                dv.setUint32(17, Math.floor(start / 4294967296), false);
                dv.setUint32(21, start >>> 0, false);
                frame.set(buf, HEADER);
                if (this.crcPos === start) {
                    this.crc = crc32c(this.crc, buf);
                    this.crcPos = start + n;
                    this.checkpoints.set(this.crcPos, this.crc);
                }
                this.ws.send(frame);
                this.pos = start + n;
            }
        } catch (e) {
            this.fail('read_error', String(e && e.message || e));
        } finally {
            this.pumping = false;
        }
    };

    Upload.prototype.onDone = function (msg) {
        if (this.done) return;
        this.done = true;
        this.gen++;
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        setProgress(this, 100);
        emit('djust:upload:progress', { ref: this.ref, progress: 100, status: 'complete',
                                        uploadName: this.uploadName, file: this.file.name,
                                        mode: 'resumable', size: msg.size, crc32c: msg.crc32c });
        notifyView(this.uploadName, 'dj-upload-complete', {
            upload_name: this.uploadName, ref: this.ref, client_name: this.file.name,
            client_size: this.file.size });
        uploads.delete(this.ref);
        this.resolve({ ref: this.ref, status: 'complete', size: msg.size, crc32c: msg.crc32c });
    };

    Upload.prototype.onError = function (msg) {
        if (msg.retryable) {
            if (msg.code === 'offset_mismatch' && msg.offset != null && this.ws) {
                // reconnect-free recovery would need the prefix CRC; resume is simpler and safe
            }
            this.retry(msg.retry_after || null);
            return;
        }
        this.fail(msg.code || 'error', msg.message || msg.code || 'Upload failed', msg);
    };

    Upload.prototype.fail = function (code, message, extra) {
        if (this.failed || this.done) return;
        this.failed = true;
        this.gen++;
        if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        if (this.ref) uploads.delete(this.ref);
        setProgress(this, 0);
        reportError(this.uploadName, this.file, code, message, this.ref, extra);
        var err = new Error(message);
        err.code = code;
        this.reject(err);
    };

    Upload.prototype.cancel = function () {
        if (this.done || this.failed || this.cancelled) return;
        this.cancelled = true;
        this.gen++;
        if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
        var ws = this.ws;
        var ref = this.ref;
        if (ws && ws.readyState === WebSocket.OPEN && ref) {
            ws.send(JSON.stringify({ type: 'cancel', ref: ref }));
            setTimeout(function () { try { ws.close(1000); } catch (_e) { /* closed */ } }, 1000);
        } else if (ref) {
            // Not open on a live socket: cancel over a short-lived connection.
            var token = this.config().token;
            try {
                var w2 = new WebSocket(this.url());
                w2.onopen = function () { w2.send(JSON.stringify({ type: 'cancel', ref: ref, token: token })); };
                w2.onmessage = function () { w2.close(1000); };
            } catch (_e) { /* best effort */ }
        }
        if (ref) uploads.delete(ref);
        emit('djust:upload:progress', { ref: ref, progress: 0, status: 'cancelled',
                                        uploadName: this.uploadName, file: this.file.name,
                                        mode: 'resumable' });
        this.reject(new Error('Upload cancelled'));
    };

    function reportError(uploadName, file, code, message, ref, extra) {
        var detail = { file: file ? file.name : null, error: message, code: code, ref: ref || null,
                       uploadName: uploadName, mode: 'resumable' };
        if (extra) {
            ['max_file_size', 'accept', 'detected', 'state', 'max_entries'].forEach(function (k) {
                if (extra[k] != null) detail[k] = extra[k];
            });
        }
        emit('djust:upload:error', detail);
        notifyView(uploadName, 'dj-upload-error', {
            upload_name: uploadName, code: code, message: message,
            client_name: file ? file.name : '', client_size: file ? file.size : 0 });
    }

    // ------------------------------------------------------------------ entry points
    async function uploadOne(uploadName, file) {
        var config = configs[uploadName] || {};
        if (config.max_file_size && file.size > config.max_file_size) {
            reportError(uploadName, file, 'too_large', 'File too large', null,
                        { max_file_size: config.max_file_size });
            throw Object.assign(new Error('File too large'), { code: 'too_large' });
        }
        var up = new Upload(uploadName, file);
        uploads.set('local:' + up.localId, up);
        try {
            return await up.start();
        } finally {
            uploads.delete('local:' + up.localId);
        }
    }

    async function handleFiles(uploadName, files) {
        if (!files || files.length === 0) return;
        var config = configs[uploadName] || {};
        var max = config.max_entries || 1;
        if (files.length > max) files = files.slice(0, max);
        await showPreviews(uploadName, files);
        // Per-entry progress: every file of a multi-file slot uploads concurrently.
        await Promise.all(files.map(function (file) {
            return uploadOne(uploadName, file).catch(function (err) {
                if (globalThis.djustDebug) console.warn('[djust_resumable] %s: %o', file.name, err);
            });
        }));
    }

    function bindOurs(scope) {
        var root = (scope && scope.querySelectorAll) ? scope : document;
        var inputs = Array.from(root.querySelectorAll('[dj-upload]'));
        if (root !== document && root.matches && root.matches('[dj-upload]')) inputs.push(root);
        inputs.forEach(function (input) {
            var name = input.getAttribute('dj-upload');
            if (!isResumable(name)) return;
            if (input._djrBoundKey === name) return;
            if (input._djrChange) input.removeEventListener('change', input._djrChange);
            if (input._djUploadChangeHandler) {
                // djust bound it before the configs arrived: take it back.
                input.removeEventListener('change', input._djUploadChangeHandler);
                input._djUploadChangeHandler = null;
            }
            // djust's bindHandlers skips inputs marked bound for the same slot name.
            input._djUploadBound = true;
            input._djUploadBoundKey = name;
            input._djrBoundKey = name;
            var config = configs[name];
            if (config.accept && !input.getAttribute('accept')) input.setAttribute('accept', config.accept);
            if (config.max_entries > 1 && !input.hasAttribute('multiple')) input.setAttribute('multiple', '');
            input._djrChange = function () { handleFiles(name, Array.from(input.files || [])); };
            input.addEventListener('change', input._djrChange);
        });

        var zones = Array.from(root.querySelectorAll('[dj-upload-drop]'));
        if (root !== document && root.matches && root.matches('[dj-upload-drop]')) zones.push(root);
        zones.forEach(function (zone) {
            var name = zone.getAttribute('dj-upload-drop');
            if (!isResumable(name)) return;
            if (zone._djrBoundKey === name) return;
            (zone._djrHandlers || []).concat(zone._djDropHandlers || []).forEach(function (h) {
                zone.removeEventListener(h[0], h[1]);
            });
            zone._djDropHandlers = [];
            zone._djDropBound = true;
            zone._djDropBoundKey = name;
            zone._djrBoundKey = name;
            var handlers = [];
            function on(type, fn) { zone.addEventListener(type, fn); handlers.push([type, fn]); }
            on('dragover', function (e) { e.preventDefault(); e.stopPropagation(); zone.classList.add('upload-dragover'); });
            on('dragleave', function (e) { e.preventDefault(); e.stopPropagation(); zone.classList.remove('upload-dragover'); });
            on('drop', function (e) {
                e.preventDefault();
                e.stopPropagation();
                zone.classList.remove('upload-dragover');
                handleFiles(name, Array.from((e.dataTransfer && e.dataTransfer.files) || []));
            });
            zone._djrHandlers = handlers;
        });
    }

    function findUpload(ref) {
        var found = uploads.get(ref);
        if (found) return found;
        uploads.forEach(function (u) { if (u.ref === ref) found = u; });
        return found || null;
    }

    var api = {
        setConfigs: function (c) {
            configs = c || {};
            if (original && original.setConfigs) original.setConfigs(c);
            // Inputs bound by djust before the configs arrived are taken over now.
            bindOurs(document);
        },
        handleProgress: function (data) {
            if (original && original.handleProgress) return original.handleProgress(data);
        },
        handleResumed: function (data) {
            if (original && original.handleResumed) return original.handleResumed(data);
        },
        bindHandlers: function (scope) {
            bindOurs(scope);  // first: marks our inputs so djust's binder skips them
            if (original && original.bindHandlers) return original.bindHandlers(scope);
        },
        queueClipboardFiles: async function (element, fileList) {
            var name = element && element.getAttribute && element.getAttribute('dj-upload');
            if (name && isResumable(name)) return handleFiles(name, Array.from(fileList || []));
            if (original && original.queueClipboardFiles) return original.queueClipboardFiles(element, fileList);
        },
        cancelUpload: function (ref) {
            var up = findUpload(ref);
            if (up) return up.cancel();
            if (original && original.cancelUpload) return original.cancelUpload(ref);
        },
        uploadFile: function (file, uploadName, opts) {
            if (isResumable(uploadName)) return uploadOne(uploadName, file);
            return original.uploadFile(file, uploadName, opts);
        },
        // djust_resumable's own surface (tests, app code).
        resumable: {
            crc32c: crc32c,
            uploads: uploads,
            configs: function () { return configs; },
            original: function () { return original; },
            isResumable: isResumable,
            handleFiles: handleFiles
        }
    };
    // Everything else djust's object offers (uploadPresigned, IndexedDB helpers, activeUploads...).
    ['activeUploads', 'uploadPresigned', 'openResumableDb', 'saveResumableRecord',
     'loadResumableRecord', 'deleteResumableRecord', 'listResumableRecords', 'fileHintKey',
     'uuidStringToBytes'].forEach(function (key) {
        Object.defineProperty(api, key, {
            enumerable: true,
            get: function () { return original ? original[key] : undefined; }
        });
    });

    // ------------------------------------------------------------------ install
    window.djust = window.djust || {};
    var desc = Object.getOwnPropertyDescriptor(window.djust, 'uploads');
    if (desc && desc.get && desc.get() && desc.get().resumable) return;  // loaded twice
    if (desc && 'value' in desc && desc.value) original = desc.value;
    Object.defineProperty(window.djust, 'uploads', {
        configurable: true,
        enumerable: true,
        get: function () { return api; },
        set: function (v) { if (v && v !== api) original = v; }
    });
    // djust fires this after its LiveView socket reconnects; uploads have their own socket
    // and reconnect by themselves, nothing to do beyond re-binding new inputs.
    document.addEventListener('djust:ws-reconnected', function () { bindOurs(document); });
})();
