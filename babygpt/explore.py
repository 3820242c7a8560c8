"""
explore.py -- `python plot.py explore --ckpt OUT`: look inside your own model, live, in the browser.

A small web server (Python's own http.server, on 127.0.0.1 only) and one page, explore.html beside this file:
HTML, CSS and JavaScript in one file, nothing fetched from the internet. The page asks the server for numbers
as JSON, and the server computes them with the functions plot.py and sample.py use, so the page shows what
`plot.py attention`, `plot.py embeddings` and `sample.py` would:

    GET  /                the page
    GET  /api/info        the loaded checkpoint: its settings, its context length, sample.py's defaults
    GET  /api/status      the times of the run's ckpt.pt, last.pt, metrics.jsonl (os.stat only: polling costs
                          nothing) and which checkpoints are newer than the one loaded
    GET  /api/metrics     the loss curves (metrics.read_metrics and loss_curves, as plot.py loss draws them)
    GET  /api/embeddings  every token in 2-D (plot.embedding_pca) and its nearest neighbours
    POST /api/analyze     {text}: its tokens, the loss at each position, every layer x head's attention weights
                          (plot.attention_maps) and each layer's mask
    POST /api/next        {text, temperature, top_k, top_p}: the next token's probabilities (softmax of the
                          model's last logits) and what sampling with those settings keeps
    POST /api/generate    {text, steps, seed, temperature, top_k, top_p}: the tokens sample.py generates
    POST /api/load        {name}: read the run's ckpt.pt or last.pt (only when the page asks)

Read-only: it never writes into the run folder. A checkpoint is read the way sample.py reads one, and train.py
replaces its checkpoints by renaming a finished file over the old one, so a run that is training is never
blocked, and the page can never read half a file. One request computes at a time, on one CPU thread: a training
beside it keeps its cores.
"""

import errno
import http.server
import json
import os
import shlex
import sys
import threading
import webbrowser
from pathlib import Path

import torch
from torch.nn import functional as F

import plot  # the same functions as plot.py attention and plot.py embeddings
import sample  # the same prompt handling and settings as sample.py
from babygpt import checkpoint, engine
from babygpt.cli import UserError
from babygpt.metrics import loss_curves, read_metrics
from babygpt.tokenizer import UnknownCharacters
from model import layer_mask

PAGE = Path(__file__).with_name("explore.html")
MAX_BODY = 8 << 20  # bytes a request may send: a text of a million characters fits, and is cropped
MAX_STEPS = 2000  # tokens one /api/generate may ask for
TOP = 10  # next-token candidates shown
NEIGHBOURS = 5  # nearest tokens shown for a hovered embedding
CHECKPOINT_NAMES = ("ckpt.pt", "last.pt")  # what train.py writes: the best, the latest


class BadRequest(ValueError):
    """A request the page (or anything else) got wrong: answered with 400 and the reason, never a crash."""


def stamp(path):
    """A file's modification time in ns, or None if it is not there: all that polling ever reads."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Loaded:
    """One checkpoint, read and ready: the model (CPU, eval mode), its tokenizer, what the page says about it."""

    def __init__(self, path):
        self.path = Path(path)
        self.stamp = stamp(self.path)  # before reading: a file replaced while we read is offered again
        try:
            state = checkpoint.load(self.path)
            self.model = checkpoint.load_model(state, source=self.path)
        except checkpoint.CheckpointError as e:
            raise UserError(str(e)) from None
        # what the page shows (the optimizer's state and the random streams are not kept: memory)
        self.state = {key: state[key] for key in ("iter_num", "best_val_loss", "meta")}
        self.tokenizer = plot.tokenizer_of(self.state)
        self.context = engine.context_length(self.model.config)  # the prompt tokens sample.py keeps
        self.embeddings = None  # computed at the first /api/embeddings

    def encode(self, text):
        """text -> (ids, unknown characters): what sample.py would read of it as a prompt (characters missing
        from the vocabulary left out, an empty text a newline, then its last `context` tokens)."""
        if not isinstance(text, str):
            raise BadRequest("text must be a string")
        try:
            self.tokenizer.encode(text)
            unknown = []
        except UnknownCharacters as e:
            unknown = e.chars
        return sample.encode_prompt(self.tokenizer, text, "skip")[-self.context:], unknown

    def info(self):
        config = self.model.config
        return {"path": str(self.path), "iter": self.state["iter_num"],
                "best_val_loss": self.state["best_val_loss"], "params": self.model.num_params(),
                "config": vars(config), "tokenizer": self.tokenizer.kind, "context": self.context,
                "defaults": {name: getattr(sample.SampleConfig, name)
                             for name in ("seed", "temperature", "top_k", "top_p")}}


# ----------------------------------------------------------------------------------------------------------------
# the numbers: each a function of a loaded checkpoint and a request


def labels(loaded, ids):
    return plot.token_labels(loaded.tokenizer, ids)


@torch.no_grad()
def analyze(loaded, text):
    """The text's tokens, how surprised the model was by each (the loss at that position: -ln p(token | the
    tokens before it); none for the first, which nothing predicts), and every layer x head's attention weights
    as plot.py attention draws them. Row t of a map holds keys 0..t only: the future is never readable."""
    ids, unknown = loaded.encode(text)
    idx = torch.tensor([ids], dtype=torch.long)  # (1, T)
    logits, _ = loaded.model(idx)  # (1, T, V)
    log_probs = F.log_softmax(logits[0].float(), dim=-1)  # (T, V)
    losses = [None] + [-log_probs[t - 1, ids[t]].item() for t in range(1, len(ids))]
    maps = plot.attention_maps(loaded.model, idx)[:, 0]  # (n_layer, nh, T, T)
    T = len(ids)
    masks = [layer_mask(block.attn, T, explicit=True) for block in loaded.model.blocks]  # each (T, T) bool
    return {
        "ids": ids, "tokens": labels(loaded, ids), "text": loaded.tokenizer.decode(ids), "unknown": unknown,
        "losses": [None if x is None else round(x, 5) for x in losses],
        "attention": [[[[round(w, 6) for w in row[: t + 1]] for t, row in enumerate(head.tolist())]
                       for head in layer] for layer in maps],  # [layer][head][query][key <= query]
        "masks": [["".join("1" if a else "0" for a in row[: t + 1]) for t, row in enumerate(mask.tolist())]
                  for mask in masks],  # [layer][query]: "1" where the key may be read
    }


def sampling_distribution(logits, temperature, top_k, top_p):
    """The probabilities model.sample_next_token draws from, for logits (B, V): its steps (temperature, top-k,
    top-p) one by one, the distribution returned instead of drawn. Temperature 0 (greedy): all on the argmax."""
    logits = logits.float().cpu()  # (B, V)
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.size(-1)).float()  # (B, V)
    logits = logits / temperature
    if top_k is not None:
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)  # (B, k) each
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) likeliest first
        sorted_probs = F.softmax(sorted_logits, dim=-1)  # (B, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): mass ranked above
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # (B, V)
        logits = torch.empty_like(logits).scatter(-1, order, sorted_logits)  # (B, V), vocab order
    return F.softmax(logits, dim=-1)  # (B, V)


def sampling_settings(body, steps=0):
    """temperature, top_k, top_p, seed from a request, defaulting and checked as sample.py checks its flags."""
    values = {name: body[name] for name in ("temperature", "top_k", "top_p", "seed") if name in body}
    for name, value in values.items():
        if type(value) not in ((int,) if name in ("top_k", "seed") else (int, float)):
            raise BadRequest(f"{name} must be a number, got {value!r}")
    try:
        return sample.SampleConfig(max_new_tokens=steps, **values)
    except ValueError as e:
        raise BadRequest(str(e)) from None


@torch.no_grad()
def next_token(loaded, body):
    """softmax(model(text)[-1]): the model's probability for every candidate next token, the TOP likeliest
    with the probability sampling gives them under the request's settings, and how many tokens it keeps."""
    cfg = sampling_settings(body)
    ids, unknown = loaded.encode(body.get("text", ""))
    logits, _ = loaded.model(torch.tensor([ids], dtype=torch.long))  # (1, T, V)
    probs = F.softmax(logits[0, -1].float(), dim=-1)  # (V,)
    sampled = sampling_distribution(logits[:, -1], cfg.temperature, cfg.top_k, cfg.top_p)[0]  # (V,)
    top = torch.topk(probs, min(TOP, probs.numel()))
    kept = sampled > 0
    return {"candidates": [{"id": i, "label": label, "text": loaded.tokenizer.decode([i]),
                            "prob": probs[i].item(), "sampled": sampled[i].item()}
                           for i, label in zip(top.indices.tolist(), labels(loaded, top.indices.tolist()))],
            "kept": int(kept.sum()), "kept_mass": probs[kept].sum().item(), "vocab_size": probs.numel(),
            "unknown": unknown}


def generate(loaded, body):
    """What `python sample.py --start TEXT --max_new_tokens STEPS --seed SEED ...` generates, token for token:
    the same prompt handling, a generator seeded the same way, the same engine.stream with the KV cache. The
    page asks again with one more step each time, so every step is the same seeded sample, one token longer."""
    steps = body.get("steps", 1)
    if type(steps) is not int or not 0 <= steps <= MAX_STEPS:
        raise BadRequest(f"steps must be a whole number from 0 to {MAX_STEPS}, got {steps!r}")
    cfg = sampling_settings(body, steps)
    ids, unknown = loaded.encode(body.get("text", ""))
    generator = torch.Generator().manual_seed(cfg.seed)
    idx = torch.tensor([ids], dtype=torch.long)  # (1, T)
    new = [token.item() for token in engine.stream(loaded.model, idx, cfg.max_new_tokens, cfg.temperature,
                                                    cfg.top_k, generator, cfg.top_p, cfg.kv_cache,
                                                    cfg.refill_every)]
    prompt = loaded.tokenizer.decode(ids)
    command = ["python", "sample.py", "--ckpt", str(loaded.path), "--start", prompt, "--max_new_tokens",
               str(steps), "--seed", str(cfg.seed), "--temperature", str(cfg.temperature), "--top_k",
               str(cfg.top_k), "--top_p", str(cfg.top_p), "--device", "cpu"]
    command += ["--unknown", "skip"] if unknown else []
    return {"new_ids": new, "new_text": loaded.tokenizer.decode(new), "prompt": prompt,
            "command": " ".join(shlex.quote(word) for word in command)}


@torch.no_grad()
def embeddings(loaded):
    """The token embeddings in 2-D (plot.embedding_pca, what plot.py embeddings draws) for the tokens plot.py
    labels (all of a character vocabulary), each with its nearest tokens by cosine similarity in the model's
    full n_embd dimensions (where two points close in 2-D may still be far apart)."""
    if loaded.embeddings is None:
        weight = loaded.model.token_embedding.weight  # (V, C)
        coords, explained = plot.embedding_pca(weight)
        ids = plot.labelled_tokens(weight.size(0))
        unit = F.normalize(weight.float(), dim=1)  # (V, C)
        similarity = unit[ids] @ unit.T  # (n, V)
        similarity[range(len(ids)), ids] = float("-inf")  # not its own neighbour
        near = torch.topk(similarity, min(NEIGHBOURS, weight.size(0) - 1), dim=1)
        all_labels = labels(loaded, range(weight.size(0)))
        loaded.embeddings = {
            "explained": explained,
            "points": [{"id": i, "label": all_labels[i], "x": coords[i, 0].item(), "y": coords[i, 1].item(),
                        "neighbours": [[all_labels[j], round(s, 3)] for j, s in zip(js, ss)]}
                       for i, js, ss in zip(ids, near.indices.tolist(), near.values.tolist())]}
    return loaded.embeddings


# ----------------------------------------------------------------------------------------------------------------
# the run folder: watched by its files' times, read only when the page asks


class Explorer:
    """The loaded checkpoint and the run folder around it. Requests run in threads; one computes at a time."""

    def __init__(self, ckpt):
        path = checkpoint.resolve(ckpt) if Path(ckpt).is_dir() else Path(ckpt)
        self.run_dir = path.parent
        self.names = tuple(dict.fromkeys((path.name, *CHECKPOINT_NAMES)))  # what /api/load may read
        self.loaded = Loaded(path)
        self.computing = threading.Lock()
        self.metrics = ("never read", None)  # (metrics.jsonl's time, its curves), read again when it changes

    def status(self):
        files = {name: stamp(self.run_dir / name) for name in (*self.names, "metrics.jsonl")}
        loaded = self.loaded
        newer = [name for name in self.names if files[name] and files[name] > (loaded.stamp or 0)]
        return {"loaded": loaded.path.name, "iter": loaded.state["iter_num"], "newer": newer,
                "metrics_version": str(files["metrics.jsonl"])}

    def load(self, name):
        if name not in self.names:
            raise BadRequest(f"name must be one of {', '.join(self.names)}, got {name!r}")
        try:
            loaded = Loaded(self.run_dir / name)
        except UserError as e:  # e.g. the file went away: the page says so, the old model stays
            raise BadRequest(str(e)) from None
        self.loaded = loaded
        return loaded.info()

    def curves(self):
        version = stamp(self.run_dir / "metrics.jsonl")
        if version != self.metrics[0]:
            try:
                self.metrics = (version, {"available": True, **loss_curves(read_metrics(self.run_dir))})
            except UserError as e:
                self.metrics = (version, {"available": False, "why": str(e)})
        vocab_size = self.loaded.model.config.vocab_size
        return {**self.metrics[1], "vocab_size": vocab_size, "loaded_iter": self.loaded.state["iter_num"]}

    def answer(self, method, path, body):
        """(status, JSON-able answer) for one request."""
        gets = {"/api/info": lambda: self.loaded.info(), "/api/status": self.status, "/api/metrics": self.curves,
                "/api/embeddings": lambda: embeddings(self.loaded)}
        posts = {"/api/analyze": lambda loaded: analyze(loaded, body.get("text", "")),
                 "/api/next": lambda loaded: next_token(loaded, body),
                 "/api/generate": lambda loaded: generate(loaded, body),
                 "/api/load": lambda loaded: self.load(body.get("name"))}
        if path not in gets and path not in posts:
            return 404, {"error": f"no such address: {path}"}
        if (method == "GET") != (path in gets):
            return 405, {"error": f"{path} takes {'GET' if path in gets else 'POST'}"}
        if path == "/api/status":  # polled: never waits behind a long generation
            return 200, self.status()
        try:
            with self.computing:
                return 200, gets[path]() if method == "GET" else posts[path](self.loaded)
        except BadRequest as e:
            return 400, {"error": str(e)}


# ----------------------------------------------------------------------------------------------------------------
# the web server: http.server, threaded, 127.0.0.1 only


class Handler(http.server.BaseHTTPRequestHandler):
    """Turns HTTP into Explorer.answer and back. Anything malformed gets a 4xx and one JSON line of why."""

    server_version = "babygpt-explore"

    def do_GET(self):
        if self.allowed_host():
            if self.path in ("/", "/index.html"):
                self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            else:
                self.reply(*self.server.explorer.answer("GET", self.path, {}))

    def do_POST(self):
        if self.allowed_host():
            body = self.read_body()
            if body is not None:
                self.reply(*self.server.explorer.answer("POST", self.path, body))

    def do_PUT(self):
        if self.allowed_host():
            self.reply(405, {"error": "this server answers GET and POST only"})

    do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_PUT

    def allowed_host(self):
        """Only pages of this address may talk to it: a web site that renames itself 127.0.0.1 (DNS rebinding)
        sends its own name as the Host header, and is refused."""
        port = self.server.server_port
        if self.headers.get("Host") in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return True
        self.reply(403, {"error": "this server answers only http://127.0.0.1:PORT/"})
        return False

    def read_body(self):
        """The request's JSON object, or None after answering 4xx: no or a huge Content-Length, not JSON."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.reply(411, {"error": "a POST needs a Content-Length"})
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for the next request
            return self.reply(413, {"error": f"the request is {length:,} bytes; at most {MAX_BODY:,}"})
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self.reply(400, {"error": "the request is not JSON"})
        if not isinstance(body, dict):
            return self.reply(400, {"error": "the request must be a JSON object"})
        return body

    def reply(self, status, answer):
        self.send(status, json.dumps(answer).encode("utf-8"), "application/json")

    def send(self, status, data, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # the page may load nothing from anywhere else: it works offline, and shows only this server's numbers
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                    "style-src 'unsafe-inline'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 -- http.server's name. Quiet: no line per request
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for a request in progress

    def handle_error(self, request, client_address):
        """A browser that closes the connection mid-answer is normal; anything else is a bug: show it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(ckpt, port=0):
    """The server for the checkpoint `ckpt` (a file or a run's folder) on 127.0.0.1:port (0: a free port),
    listening but not yet serving. One line (UserError) for a missing run or a port in use."""
    explorer = Explorer(ckpt)
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be from 0 to 65535 (0: a free one), got {port}")
    try:
        server = Server(("127.0.0.1", port), Handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use on 127.0.0.1 (another explore?); give another --port, or "
                            f"leave it out for a free one") from None
        raise UserError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    server.explorer = explorer
    return server


def serve(ckpt, port=0, open_browser=True):
    """plot.py explore: serve until Ctrl-C, which closes the port (runner.run then says "interrupted")."""
    server = make_server(ckpt, port)
    address = f"http://127.0.0.1:{server.server_port}/"
    torch.set_num_threads(1)  # one core for the page: a training beside it keeps the others
    print(f"exploring {server.explorer.loaded.path} at {address} (Ctrl-C stops)", flush=True)
    has_display = os.name == "nt" or os.uname().sysname == "Darwin" or os.environ.get("DISPLAY") \
        or os.environ.get("WAYLAND_DISPLAY")
    if open_browser and has_display:  # without a display, webbrowser would start a text browser here
        webbrowser.open(address)
    try:
        server.serve_forever()
    finally:
        server.server_close()
