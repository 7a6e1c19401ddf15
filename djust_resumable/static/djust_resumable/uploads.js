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
 *  - in-flight uploads are remembered in IndexedDB (database `djust_resumable`) under the
 *    page path, slot and the file's fingerprint (name, size, lastModified and a SHA-256 of
 *    the first and last MiB): after a page reload, picking the same file `resume`s at the
 *    server's offset. The server re-checks the fingerprint it recorded, so another file
 *    starts over (a fresh `open`). Finished, failed and cancelled uploads are forgotten.
 *  - `auto_upload: false` slots upload when their `dj-submit` form is submitted; a
 *    `dj-submit` of a form whose resumable uploads are in flight is held (the form shows
 *    djust's `dj-form-pending` state) and re-submitted through djust once every byte is
 *    stored, so the handler always finds the entries.
 *  - pause/resume per upload (`window.djust.uploads.resumable.pause(ref)` / `.resume(ref)`,
 *    or the buttons of a `dj-upload-progress` container marked `dj-upload-controls`);
 *    progress events carry `bytes`, `total`, `speed` (bytes/s) and `eta` (s).
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

    // CRC32C of two concatenated pieces from their CRCs: zlib's crc32_combine (GF(2) matrix
    // powers of the "append one zero bit" operator), with the Castagnoli polynomial.
    function gf2Times(mat, vec) {
        var sum = 0;
        for (var i = 0; vec; i++, vec >>>= 1) if (vec & 1) sum ^= mat[i];
        return sum >>> 0;
    }

    function gf2Square(square, mat) {
        for (var n = 0; n < 32; n++) square[n] = gf2Times(mat, mat[n]);
    }

    /** CRC32C of A+B from `crcA`, `crcB` and B's length in bytes (any size up to 2^53). */
    function crc32cCombine(crcA, crcB, lenB) {
        if (lenB <= 0) return crcA >>> 0;
        var even = new Array(32), odd = new Array(32);
        odd[0] = 0x82F63B78;
        for (var n = 1, row = 1; n < 32; n++, row = (row << 1) >>> 0) odd[n] = row;
        gf2Square(even, odd);   // 2 zero bits
        gf2Square(odd, even);   // 4 zero bits
        var crc = crcA >>> 0;
        do {
            gf2Square(even, odd);
            if (lenB % 2) crc = gf2Times(even, crc);
            lenB = Math.floor(lenB / 2);
            if (!lenB) break;
            gf2Square(odd, even);
            if (lenB % 2) crc = gf2Times(odd, crc);
            lenB = Math.floor(lenB / 2);
        } while (lenB);
        return (crc ^ crcB) >>> 0;
    }

    /** CRC32C of [0, end), extending `crc` (the CRC of [0, from)) over [from, end). */
    async function crcPrefix(file, end, from, crc) {
        from = from || 0;
        crc = crc || 0;
        for (var pos = from; pos < end; pos += CRC_SLICE) {
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
        if (bytes < 1024 * 1024 * 1024) return (bytes / (1024 * 1024)).toFixed(1) + ' MB';
        return (bytes / (1024 * 1024 * 1024)).toFixed(2) + ' GB';
    }

    function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

    // Bytes of the file's head sent with `resume`: the server compares them with the head
    // bytes it kept (HEAD_BYTES, 4 KiB) before it lets the upload continue.
    var HEAD_CHECK = 4096;

    function base64(bytes) {
        var bin = '';
        for (var i = 0; i < bytes.length; i += 0x8000) {
            bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        }
        return btoa(bin);
    }

    /**
     * The file's fingerprint, at most ~80 characters (the server keeps up to 128):
     * `v2:<size>:<lastModified ms>:<40 hex of SHA-256(name, first MiB, last MiB)>`. Only the
     * two slices are read. Name/size/mtime alone are the peers' known weakness
     * (tus/tus.io#93): two files with the same name and size would collide. Returns
     * `{fp, strong}`; `strong` is false without SubtleCrypto (not a secure context), and
     * such uploads are not remembered across reloads.
     */
    async function fingerprint(file) {
        var base = 'v2:' + file.size + ':' + (file.lastModified || 0);
        var headCheck = null;
        try {
            if (!(window.crypto && crypto.subtle)) return { fp: base, strong: false };
            var MiB = 1024 * 1024;
            var name = new TextEncoder().encode(file.name + '\n');
            var head = await file.slice(0, Math.min(file.size, MiB)).arrayBuffer();
            var tail = await file.slice(Math.max(0, file.size - MiB)).arrayBuffer();
            headCheck = base64(new Uint8Array(head, 0, Math.min(head.byteLength, HEAD_CHECK)));
            var all = new Uint8Array(name.length + head.byteLength + tail.byteLength);
            all.set(name, 0);
            all.set(new Uint8Array(head), name.length);
            all.set(new Uint8Array(tail), name.length + head.byteLength);
            var digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
            var hex = Array.from(digest, function (b) { return b.toString(16).padStart(2, '0'); });
            return { fp: base + ':' + hex.join('').slice(0, 40), strong: true, head: headCheck };
        } catch (_e) {
            return { fp: base, strong: false, head: headCheck };
        }
    }

    // ------------------------------------------------------------------ IndexedDB memory
    // One object store, key `<page path>\n<slot>\n<fingerprint>` -> {ref, slot, name, size,
    // updated}. Only the ref is trusted from here: after a reload the CRC of the part the
    // server has is recomputed from the local file (in the background, while the rest is
    // sent), so the `finish` CRC covers the bytes of the file actually picked and a file that
    // merely shares the fingerprint fails the server's check instead of completing a mix.
    // Every call resolves (null on any IndexedDB failure: private mode, quota).
    var DB_NAME = 'djust_resumable';
    var STORE = 'uploads';
    var MEMORY_MAX_AGE = 24 * 3600 * 1000;  // LEDGER_TTL's default; older refs have expired
    var dbPromise = null;

    function openDb() {
        if (dbPromise) return dbPromise;
        dbPromise = new Promise(function (resolve) {
            try {
                if (!window.indexedDB) return resolve(null);
                var req = indexedDB.open(DB_NAME, 1);
                req.onupgradeneeded = function () { req.result.createObjectStore(STORE); };
                req.onsuccess = function () { resolve(req.result); };
                req.onerror = function () { resolve(null); };
                req.onblocked = function () { resolve(null); };
            } catch (_e) {
                resolve(null);
            }
        });
        return dbPromise;
    }

    function dbCall(mode, fn) {
        return openDb().then(function (db) {
            if (!db) return null;
            return new Promise(function (resolve) {
                try {
                    var tx = db.transaction(STORE, mode);
                    var req = fn(tx.objectStore(STORE));
                    tx.oncomplete = function () { resolve(req ? req.result : null); };
                    tx.onerror = tx.onabort = function () { resolve(null); };
                } catch (_e) {
                    resolve(null);
                }
            });
        });
    }

    var memory = {
        get: function (key) { return dbCall('readonly', function (s) { return s.get(key); }); },
        put: function (key, rec) {
            rec.updated = Date.now();
            return dbCall('readwrite', function (s) { return s.put(rec, key); });
        },
        forget: function (key) { return dbCall('readwrite', function (s) { return s.delete(key); }); },
        all: function () {
            return dbCall('readonly', function (s) { return s.getAll(); }).then(function (v) { return v || []; });
        },
        sweep: function () {
            // Entries older than the ledger's TTL point at expired uploads.
            var cutoff = Date.now() - MEMORY_MAX_AGE;
            return dbCall('readwrite', function (s) {
                var req = s.openCursor();
                req.onsuccess = function () {
                    var c = req.result;
                    if (!c) return;
                    if (!c.value || !(c.value.updated > cutoff)) c.delete();
                    c.continue();
                };
                return null;
            });
        }
    };

    function memoryKey(uploadName, fp) {
        return location.pathname + '\n' + uploadName + '\n' + fp;
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
    var deferred = new Map(); // slot -> File[] picked in an auto_upload:false slot, not sent yet
    var inFlight = new Map(); // slot -> Set of batch promises (resolve to booleans: stored?)

    function isResumable(uploadName) {
        var c = configs[uploadName];
        return !!(c && c.resumable && c.endpoint);
    }

    function isDeferred(uploadName) {
        var c = configs[uploadName];
        return !!(c && c.auto_upload === false);
    }

    // ------------------------------------------------------------------ progress UI
    var SPEED_SPAN = 5000;    // ms of samples the speed is averaged over
    var RENDER_EVERY = 250;   // ms between renders when only speed/ETA changed

    function formatRate(bps) {
        return bps > 0 ? formatSize(bps) + '/s' : '';
    }

    function formatEta(seconds) {
        if (!(seconds >= 0) || !isFinite(seconds)) return '';
        seconds = Math.ceil(seconds);
        var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
        var mm = (h ? String(m).padStart(2, '0') : String(m)) + ':' + String(s).padStart(2, '0');
        return (h ? h + ':' : '') + mm + ' left';
    }

    function progressItem(el, up) {
        var item = el.querySelector('[data-upload-local="' + up.localId + '"]');
        if (item) return item;
        item = document.createElement('div');
        item.className = 'upload-progress-item';
        item.setAttribute('data-upload-local', String(up.localId));
        item.innerHTML = '<span class="upload-progress-name"></span>' +
            '<div class="upload-progress-track"><div class="upload-progress-bar" ' +
            'role="progressbar" aria-valuemin="0" aria-valuemax="100"></div></div>' +
            '<span class="upload-progress-text"></span>';
        item.querySelector('.upload-progress-name').textContent = up.file.name;
        if (el.hasAttribute('dj-upload-controls')) {
            // Our extension of djust's markup: speed/ETA line and a pause/resume button.
            var meta = document.createElement('span');
            meta.className = 'upload-progress-meta';
            item.appendChild(meta);
            var btn = document.createElement('button');
            btn.type = 'button';  // never submits an enclosing form
            btn.className = 'upload-pause';
            btn.addEventListener('click', function () { if (up.paused) up.resume(); else up.pause(); });
            item.appendChild(btn);
        }
        el.appendChild(item);
        return item;
    }

    /** Show `up`'s state in its slot's `dj-upload-progress` elements and emit
     *  `djust:upload:progress`. Percent changes render at once, speed/ETA at most 4 times a
     *  second (`force` renders anyway). */
    function render(up, force) {
        var total = up.file.size;
        var bytes = Math.min(total, up.received);
        var percent = total ? Math.floor(bytes * 100 / total) : 0;
        if (!up.done && percent >= 100) percent = 99;  // 100 only once stored and checked
        if (up.done) percent = 100;
        if (up.failed || up.cancelled) percent = 0;
        var now = Date.now();
        if (!force && percent === up.shownPercent && now - up.lastRender < RENDER_EVERY) return;
        up.shownPercent = percent;
        up.lastRender = now;
        var status = up.status();
        var speed = status === 'uploading' ? up.speed : 0;
        var eta = speed > 0 ? (total - bytes) / speed : null;
        var els = document.querySelectorAll('[dj-upload-progress="' + cssEscape(up.uploadName) + '"]');
        els.forEach(function (el) {
            if (el.tagName === 'PROGRESS') {
                el.max = 100;
                el.value = percent;
                return;
            }
            var item = progressItem(el, up);
            if (up.ref) item.setAttribute('data-upload-ref', up.ref);
            item.setAttribute('data-status', status);
            var bar = item.querySelector('.upload-progress-bar');
            bar.style.width = percent + '%';
            bar.setAttribute('aria-valuenow', String(percent));
            item.querySelector('.upload-progress-text').textContent = percent + '%';
            var meta = item.querySelector('.upload-progress-meta');
            if (meta) {
                var text = status === 'uploading'
                    ? [formatSize(bytes) + ' of ' + formatSize(total), formatRate(speed),
                       formatEta(eta)].filter(Boolean).join(' · ')
                    : status === 'complete' ? formatSize(total) + ' stored' : status;
                meta.textContent = text;
            }
            var btn = item.querySelector('.upload-pause');
            if (btn) {
                btn.textContent = up.paused ? 'Resume' : 'Pause';
                btn.hidden = up.done || up.failed || up.cancelled;
            }
        });
        emit('djust:upload:progress', {
            ref: up.ref, progress: percent, status: status, uploadName: up.uploadName,
            file: up.file.name, mode: 'resumable', bytes: bytes, total: total,
            speed: speed, eta: eta,
            size: up.stored ? up.stored.size : undefined,
            crc32c: up.stored ? up.stored.crc32c : undefined
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
    // Non-retryable answers to a `resume` of a remembered ref that mean "this ref is of no
    // use" (expired, another file, cancelled elsewhere): the upload starts over with `open`.
    var STALE = ['not_found', 'aborted', 'failed', 'invalid_state', 'bad_token'];

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
        // CRC32C in two pieces: crcBaseValue (a promise) is the CRC of [0, crcBase), read
        // from the local file; crc is the CRC of [crcBase, crcPos), computed as frames go.
        this.crcBase = 0;
        this.crcBaseValue = Promise.resolve(0);
        this.crc = 0;
        this.crcPos = 0;
        this.checkpoints = new Map();  // offset -> crc of [crcBase, offset) (frame boundaries)
        this.failures = 0;
        this.done = false;
        this.failed = false;
        this.cancelled = false;
        this.paused = false;
        this.finishSent = false;
        this.pumpGen = null;      // generation of the running pump loop
        this.gen = 0;             // connection generation: stale sockets are ignored
        this.shownPercent = -1;
        this.lastRender = 0;
        this.samples = [];        // [time ms, received] over the last SPEED_SPAN
        this.speed = 0;           // bytes/s
        this.fp = null;
        this.key = null;          // IndexedDB key (null: not remembered)
        this.fromMemory = false;  // ref came from IndexedDB (a reload); not confirmed yet
        this.everReady = false;
        this.restarted = false;
        var self = this;
        this.promise = new Promise(function (res, rej) { self.resolve = res; self.reject = rej; });
        this.promise.catch(function () { /* callers that do not await still see the error event */ });
    }

    Upload.prototype.config = function () { return configs[this.uploadName] || {}; };

    Upload.prototype.status = function () {
        if (this.done) return 'complete';
        if (this.failed) return 'error';
        if (this.cancelled) return 'cancelled';
        if (this.paused) return 'paused';
        if (!this.ws || this.retryTimer) return this.everReady ? 'reconnecting' : 'connecting';
        return 'uploading';
    };

    Upload.prototype.start = async function () {
        var f = await fingerprint(this.file);
        this.fp = f.fp;
        this.head = f.head;
        if (f.strong) {
            this.key = memoryKey(this.uploadName, this.fp);
            var rec = await memory.get(this.key);
            var live = rec && rec.ref ? findUpload(rec.ref) : null;
            if (live && live !== this) {
                // The same file picked twice in this page: the second is a separate upload
                // (resuming the first one's ref would take it over).
                this.key = null;
            } else if (rec && rec.ref && rec.size === this.file.size) {
                this.ref = rec.ref;
                this.fromMemory = true;
                uploads.set(this.ref, this);
            }
        }
        render(this, true);
        this.connect();
        return this.promise;
    };

    /** Write what a reload needs to resume (the ref), once per ref. */
    Upload.prototype.remember = function () {
        if (!this.key || !this.ref || this.done || this.failed || this.cancelled) return;
        if (this.remembered === this.ref) return;
        this.remembered = this.ref;
        memory.put(this.key, { ref: this.ref, slot: this.uploadName, name: this.file.name,
                               size: this.file.size });
    };

    Upload.prototype.forget = function () {
        if (this.key) memory.forget(this.key);
    };

    Upload.prototype.url = function () {
        var ep = this.config().endpoint || '/ws/djust-resumable/';
        if (/^wss?:\/\//.test(ep)) return ep;
        return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + ep;
    };

    Upload.prototype.connect = function () {
        if (this.done || this.failed || this.cancelled || this.paused) return;
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
            // After a reload the token is the newly mounted view's (configs are per mount).
            var token = self.config().token;
            if (self.ref) {
                var resume = { type: 'resume', id: 'r' + gen, token: token, ref: self.ref,
                               fingerprint: self.fp };
                if (self.head) resume.head = self.head;
                ws.send(JSON.stringify(resume));
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
            if (!self.done && !self.failed && !self.cancelled && !self.paused) self.retry(null);
        };
        ws.onerror = function () { /* onclose follows */ };
    };

    Upload.prototype.retry = function (after) {
        if (this.retryTimer || this.paused) return;
        this.gen++;  // ignore the old socket from now on
        if (this.ws) { try { this.ws.close(); } catch (_e) { /* closed */ } this.ws = null; }
        this.failures++;
        var delay = Math.min(BACKOFF_MAX, BACKOFF_INITIAL * Math.pow(2, Math.min(this.failures - 1, 10)));
        if (after) delay = Math.min(delay, after * 1000);
        delay = delay * (0.5 + Math.random() / 2);
        var self = this;
        this.retryTimer = setTimeout(function () { self.retryTimer = null; self.connect(); }, delay);
        this.samples = [];
        this.speed = 0;
        render(this, true);
    };

    Upload.prototype.sample = function () {
        var now = Date.now();
        this.samples.push([now, this.received]);
        while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_SPAN) this.samples.shift();
        var a = this.samples[0];
        this.speed = now > a[0] ? Math.max(0, (this.received - a[1]) * 1000 / (now - a[0])) : 0;
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
            this.sample();
            render(this, false);
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
        this.everReady = true;
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
        this.samples = [];
        this.speed = 0;
        // The CRC up to the server's offset: a checkpoint of this page's own sending (a
        // reconnect), else (a reload, or an offset this page never sent) a new base whose
        // CRC is read from the local file in the background; `finish` waits for it.
        if (offset !== this.crcPos) {
            if (offset >= this.crcBase && this.checkpoints.has(offset)) {
                this.crc = this.checkpoints.get(offset);
            } else {
                this.crcBase = offset;
                this.crcBaseValue = crcPrefix(this.file, offset);
                this.crcBaseValue.catch(function () { /* reported by finish */ });
                this.crc = 0;
                this.checkpoints = new Map([[offset, 0]]);
            }
            this.crcPos = offset;
        }
        this.pos = offset;
        if (gen !== this.gen) return;
        this.remember();
        render(this, true);
        this.pump(gen);
    };

    Upload.prototype.pruneCheckpoints = function () {
        var self = this;
        this.checkpoints.forEach(function (_v, k) { if (k < self.durable) self.checkpoints.delete(k); });
    };

    Upload.prototype.pump = async function (gen) {
        // One loop per connection generation: a loop of an older generation may still be
        // awaiting a slice; it stops at its next check and must not block the new one.
        if (this.pumpGen === gen || gen !== this.gen || this.done || this.failed || this.cancelled) return;
        this.pumpGen = gen;
        try {
            var size = this.file.size;
            while (gen === this.gen && this.ws && this.ws.readyState === WebSocket.OPEN) {
                if (this.pos >= size) {
                    if (!this.finishSent) {
                        this.finishSent = true;
                        var whole = await this.wholeCrc();
                        if (gen !== this.gen || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
                        this.ws.send(JSON.stringify({ type: 'finish', ref: this.ref, crc32c: whole }));
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
            if (this.pumpGen === gen) this.pumpGen = null;
        }
    };

    /** CRC32C of the whole file: the base piece (awaited) combined with the sent piece. */
    Upload.prototype.wholeCrc = async function () {
        var size = this.file.size;
        if (this.crcPos !== size) return crcPrefix(this.file, size);  // not expected
        var base = await this.crcBaseValue;
        return crc32cCombine(base, this.crc, size - this.crcBase);
    };

    Upload.prototype.onDone = function (msg) {
        if (this.done) return;
        this.done = true;
        this.gen++;
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        this.received = this.file.size;
        this.forget();
        this.stored = { size: msg.size, crc32c: msg.crc32c };
        render(this, true);
        notifyView(this.uploadName, 'dj-upload-complete', {
            upload_name: this.uploadName, ref: this.ref, client_name: this.file.name,
            client_size: this.file.size });
        uploads.delete(this.ref);
        this.resolve({ ref: this.ref, status: 'complete', size: msg.size, crc32c: msg.crc32c });
    };

    Upload.prototype.onError = function (msg) {
        if (this.fromMemory && !this.everReady && STALE.indexOf(msg.code) >= 0) {
            // The remembered ref is of no use (another file with this name and size, expired,
            // cancelled): start over. The server refused before writing anything.
            this.restart();
            return;
        }
        if (msg.code === 'checksum_mismatch' && this.fromMemory && !this.restarted) {
            // Resumed onto bytes of another file that shares the fingerprint (same name,
            // size, mtime, first and last MiB): the server failed it; send this file whole.
            this.restart();
            return;
        }
        if (msg.retryable) {
            this.retry(msg.retry_after || null);
            return;
        }
        this.fail(msg.code || 'error', msg.message || msg.code || 'Upload failed', msg);
    };

    /** Forget the remembered ref and upload from byte 0 under a new one. */
    Upload.prototype.restart = function () {
        this.forget();
        if (this.ref) uploads.delete(this.ref);
        this.ref = null;
        this.refHead = null;
        this.fromMemory = false;
        this.restarted = true;
        this.crcBase = 0;
        this.crcBaseValue = Promise.resolve(0);
        this.crc = 0;
        this.crcPos = 0;
        this.checkpoints = new Map();
        this.remembered = null;
        this.durable = this.received = this.pos = 0;
        this.finishSent = false;
        this.gen++;
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        this.connect();
    };

    Upload.prototype.fail = function (code, message, extra) {
        if (this.failed || this.done) return;
        this.failed = true;
        this.gen++;
        if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        if (this.ref) uploads.delete(this.ref);
        this.forget();
        render(this, true);
        reportError(this.uploadName, this.file, code, message, this.ref, extra);
        var err = new Error(message);
        err.code = code;
        this.reject(err);
    };

    /** Stop sending and close the socket (the server keeps every byte it stored, and the
     *  partial part, as on any drop); `resume()` continues at the server's offset. */
    Upload.prototype.pause = function () {
        if (this.done || this.failed || this.cancelled || this.paused) return;
        this.paused = true;
        this.gen++;
        if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
        if (this.ws) { try { this.ws.close(1000); } catch (_e) { /* closed */ } this.ws = null; }
        this.samples = [];
        this.speed = 0;
        render(this, true);
    };

    Upload.prototype.resume = function () {
        if (!this.paused) return;
        this.paused = false;
        this.failures = 0;
        render(this, true);
        this.connect();
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
        this.forget();
        render(this, true);
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

    /** Upload `files` to the slot now. The batch is tracked (synchronously, so a submit
     *  right after the selection waits for it); resolves to one boolean per file (stored?). */
    function startFiles(uploadName, files) {
        var batch = Promise.all(files.map(function (file) {
            return uploadOne(uploadName, file).then(function () { return true; }, function (err) {
                if (globalThis.djustDebug) console.warn('[djust_resumable] %s: %o', file.name, err);
                return false;
            });
        }));
        var set = inFlight.get(uploadName);
        if (!set) inFlight.set(uploadName, set = new Set());
        set.add(batch);
        batch.then(function () { set.delete(batch); });
        return batch;
    }

    /** Files picked or dropped for a slot: previews, then (auto_upload, djust's default)
     *  the upload, or (auto_upload=False) nothing until the form is submitted. Every file
     *  of a multi-file slot uploads concurrently, with its own progress. */
    async function handleFiles(uploadName, files) {
        if (!files || files.length === 0) return [];
        var config = configs[uploadName] || {};
        var max = config.max_entries || 1;
        if (files.length > max) files = files.slice(0, max);
        if (isDeferred(uploadName)) {
            deferred.set(uploadName, files);  // a new pick replaces the previous one
            await showPreviews(uploadName, files);
            return [];
        }
        var batch = startFiles(uploadName, files);
        await showPreviews(uploadName, files);
        return batch;
    }

    // ------------------------------------------------------------------ dj-submit
    // Mirrors djust's `_setFormPending` (static/djust/src/09-event-binding.js, not exported):
    // `data-djust-form-pending` on the form and the `dj-form-pending="hide|show|disabled"`
    // modes of its descendants, so a form held here looks exactly as djust's in-flight one.
    function setFormPending(form, pending) {
        if (pending) form.setAttribute('data-djust-form-pending', 'true');
        else form.removeAttribute('data-djust-form-pending');
        form.querySelectorAll('[dj-form-pending]').forEach(function (el) {
            var mode = el.getAttribute('dj-form-pending');
            if (mode === 'hide') {
                if (pending) el.setAttribute('hidden', ''); else el.removeAttribute('hidden');
            } else if (mode === 'show') {
                if (pending) el.removeAttribute('hidden'); else el.setAttribute('hidden', '');
            } else if (mode === 'disabled') {
                if (pending) {
                    if (!el.hasAttribute('data-djust-form-pending-was-disabled')) {
                        el.setAttribute('data-djust-form-pending-was-disabled', el.disabled ? 'true' : 'false');
                    }
                    el.disabled = true;
                } else {
                    var was = el.getAttribute('data-djust-form-pending-was-disabled');
                    el.disabled = was === 'true';
                    el.removeAttribute('data-djust-form-pending-was-disabled');
                }
            }
        });
    }

    function formSlots(form) {
        var names = [];
        form.querySelectorAll('[dj-upload], [dj-upload-drop]').forEach(function (el) {
            var n = el.getAttribute('dj-upload') || el.getAttribute('dj-upload-drop');
            if (n && isResumable(n) && names.indexOf(n) < 0) names.push(n);
        });
        return names;
    }

    /**
     * Capture-phase `submit` listener on the document: it runs before djust's delegated
     * listener on the view root. A `dj-submit` form with resumable slots starts their
     * deferred (auto_upload=False) files; while any upload of those slots is in flight the
     * event is stopped, the form shows djust's pending state, and once every upload settled
     * the form is submitted again (`requestSubmit`, same submitter) and this time passes to
     * djust untouched, which sends the event as always. If every held upload failed, the
     * submit is dropped (the errors were reported through `djust:upload:error` and
     * `dj-upload-error`).
     */
    function onSubmitCapture(e) {
        var form = e.target && e.target.closest ? e.target.closest('[dj-submit]') : null;
        if (!form) return;
        if (form._djrRelease) { form._djrRelease = false; return; }
        var slots = formSlots(form);
        if (!slots.length) return;
        var waits = [];
        slots.forEach(function (n) {
            var files = deferred.get(n);
            if (files && files.length) { deferred.delete(n); startFiles(n, files); }
            (inFlight.get(n) || new Set()).forEach(function (p) { waits.push(p); });
        });
        if (!waits.length) return;
        e.preventDefault();
        e.stopPropagation();
        if (form._djrHeld) return;  // a second click while held: one submit follows
        form._djrHeld = true;
        var submitter = e.submitter || null;
        setFormPending(form, true);
        Promise.all(waits).then(function (batches) {
            var results = [].concat.apply([], batches);
            form._djrHeld = false;
            setFormPending(form, false);
            if (!form.isConnected) return;
            if (results.length && !results.some(Boolean)) return;
            // The submit event is dispatched synchronously inside requestSubmit; the flag
            // is cleared after it either way (constraint validation may cancel the submit).
            form._djrRelease = true;
            try {
                if (typeof form.requestSubmit === 'function') {
                    if (submitter && submitter.form === form) form.requestSubmit(submitter);
                    else form.requestSubmit();
                } else {
                    form.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
                }
            } catch (err) {
                console.error('[djust_resumable] re-submit failed: %o', err);
            } finally {
                form._djrRelease = false;
            }
        });
    }

    // ------------------------------------------------------------------ binding
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

    function listUploads() {
        var seen = [];
        uploads.forEach(function (u) { if (seen.indexOf(u) < 0) seen.push(u); });
        return seen.map(function (u) {
            return { ref: u.ref, uploadName: u.uploadName, name: u.file.name, size: u.file.size,
                     received: u.received, durable: u.durable, status: u.status(),
                     speed: u.speed, resumedFromMemory: u.fromMemory };
        });
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
            crc32cCombine: crc32cCombine,
            uploads: uploads,
            list: listUploads,
            configs: function () { return configs; },
            original: function () { return original; },
            isResumable: isResumable,
            handleFiles: handleFiles,
            /** Start the files waiting in an auto_upload=False slot (without a form submit). */
            startDeferred: function (uploadName) {
                var files = deferred.get(uploadName) || [];
                deferred.delete(uploadName);
                return startFiles(uploadName, files);
            },
            pause: function (ref) { var up = findUpload(ref); if (up) up.pause(); return !!up; },
            resume: function (ref) { var up = findUpload(ref); if (up) up.resume(); return !!up; },
            memory: memory,
            fingerprint: fingerprint
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
    document.addEventListener('submit', onSubmitCapture, true);
    memory.sweep();
})();
