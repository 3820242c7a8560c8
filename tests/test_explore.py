"""plot.py explore: the page's numbers are the model's own (the forward, plot.py's attention maps and embeddings,
sample.py's generation), every checkpoint kind works, bad requests get a 4xx and the server goes on, and it
listens on 127.0.0.1 only. The server runs here in a thread, spoken to over real HTTP; the browser tests are in
test_explore_browser.py (slow tier)."""

import dataclasses
import http.client
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request

import pytest
import torch
from torch.nn import functional as F

import plot
import sample
from babygpt import checkpoint, explore
from babygpt.bpe import ranks_to_base64, train_bpe
from babygpt.attention_patterns import attention_pattern
from babygpt.runner import run
from babygpt.metrics import loss_curves, read_metrics
from babygpt.tokenizer import GPT2Tokenizer, TokenizerUnavailable
from conftest import skip_for_missing_data
from model import GPT, GPTConfig, sample_next_token
from test_errors import fails

TEXT = "ROMEO: But soft"


def serve_in_thread(ckpt):
    server = explore.make_server(ckpt)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def call(server, path, body=None, raw=None, headers=None):
    """(status, JSON answer) of one request, as the page sends it (a POST when there is a body)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}{path}", data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def served(trained_run):
    server = serve_in_thread(trained_run)
    yield server
    server.shutdown()
    server.server_close()


def model_of(run_dir):
    state = checkpoint.load(checkpoint.resolve(run_dir))
    return state, checkpoint.load_model(state), plot.tokenizer_of(state)


# -- the numbers are the model's own


def test_next_token_probabilities_are_the_softmax_of_the_last_logits(served, trained_run):
    _, model, tokenizer = model_of(trained_run)
    with torch.no_grad():
        probs = F.softmax(model(torch.tensor([tokenizer.encode(TEXT)]))[0][0, -1], dim=-1)  # (V,)
    status, answer = call(served, "/api/next", {"text": TEXT, "temperature": 1.0, "top_k": 200, "top_p": 1.0})
    assert status == 200
    top = torch.topk(probs, 10)
    assert [c["id"] for c in answer["candidates"]] == top.indices.tolist()
    for c in answer["candidates"]:
        assert c["prob"] == pytest.approx(probs[c["id"]].item(), abs=1e-6)
        assert c["sampled"] == pytest.approx(c["prob"], abs=1e-5)  # temperature 1, nothing cut: the same
        assert c["label"] == plot.token_labels(tokenizer, [c["id"]])[0]
    assert answer["kept"] == model.config.vocab_size and answer["kept_mass"] == pytest.approx(1.0, abs=1e-5)
    # what sampling keeps: the 3 likeliest with top_k 3, all on the likeliest when greedy
    _, kept3 = call(served, "/api/next", {"text": TEXT, "top_k": 3})
    assert kept3["kept"] == 3 and sum(c["sampled"] for c in kept3["candidates"]) == pytest.approx(1.0, abs=1e-5)
    _, greedy = call(served, "/api/next", {"text": TEXT, "temperature": 0})
    assert greedy["kept"] == 1 and greedy["candidates"][0]["sampled"] == 1.0


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.8, 200, 1.0), (1.3, 5, 1.0), (0.7, 200, 0.6), (0, 200, 1.0)])
def test_the_sampling_distribution_shown_is_the_one_sample_next_token_draws_from(temperature, top_k, top_p):
    """Drawn with the same seed from the shown distribution, the token is always sample_next_token's."""
    logits = torch.randn(1, 65, generator=torch.Generator().manual_seed(0)) * 3  # (1, V)
    shown = explore.sampling_distribution(logits, temperature, top_k, top_p)  # (1, V)
    for seed in range(200):
        drawn = torch.multinomial(shown, 1, generator=torch.Generator().manual_seed(seed))
        assert drawn.item() == sample_next_token(logits, temperature, top_k,
                                                 torch.Generator().manual_seed(seed), top_p).item()


def test_losses_and_attention_are_the_forward_and_plot_attention_maps(served, trained_run):
    _, model, tokenizer = model_of(trained_run)
    status, answer = call(served, "/api/analyze", {"text": TEXT})
    assert status == 200 and answer["text"] == TEXT and answer["unknown"] == []
    idx = torch.tensor([tokenizer.encode(TEXT)])  # (1, T)
    with torch.no_grad():
        logits, _ = model(idx)  # (1, T, V)
    losses = F.cross_entropy(logits[0, :-1], idx[0, 1:], reduction="none")  # (T-1,)
    assert answer["losses"][0] is None  # nothing predicts the first token
    assert answer["losses"][1:] == pytest.approx(losses.tolist(), abs=1e-4)
    maps = plot.attention_maps(model, idx)[:, 0]  # (n_layer, nh, T, T)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            for query, row in enumerate(answer["attention"][layer][head]):
                assert row == pytest.approx(maps[layer, head, query, : query + 1].tolist(), abs=1e-6)
    assert answer["masks"][0][3] == "1111"  # causal: every earlier token, itself included
    assert answer["tokens"] == plot.token_labels(tokenizer, idx[0].tolist())


def test_stepped_generation_is_sample_py_with_the_same_seed_and_settings(served, trained_run, capsys):
    settings = {"seed": 7, "temperature": 0.9, "top_k": 20, "top_p": 0.95}
    steps = [call(served, "/api/generate", {"text": TEXT, "steps": n, **settings})[1] for n in (1, 2, 19, 20)]
    # one step more is the same sample, one token longer
    assert [s["new_ids"] for s in steps[:3]] == [steps[3]["new_ids"][:n] for n in (1, 2, 19)]
    flags = [f"--{name}" if i % 2 == 0 else str(value) for name, value in settings.items() for i in (0, 1)]
    run(sample.main, ["--ckpt", str(trained_run), "--start", TEXT, "--max_new_tokens", "20", *flags, "--device", "cpu"])
    printed = capsys.readouterr().out
    assert printed == TEXT + steps[3]["new_text"] + "\n"
    assert "--seed 7 --temperature 0.9 --top_k 20 --top_p 0.95" in steps[3]["command"]


def test_embeddings_are_plot_embedding_pca_with_the_nearest_tokens(served, trained_run):
    _, model, tokenizer = model_of(trained_run)
    status, answer = call(served, "/api/embeddings")
    coords, explained = plot.embedding_pca(model.token_embedding.weight)
    assert status == 200 and answer["explained"] == pytest.approx(explained)
    assert len(answer["points"]) == model.config.vocab_size
    for point in answer["points"]:
        assert [point["x"], point["y"]] == pytest.approx(coords[point["id"]].tolist(), abs=1e-6)
    unit = F.normalize(model.token_embedding.weight, dim=1)
    first = answer["points"][0]
    similarity = unit[0] @ unit[1:].T  # token 0 against all others
    best = torch.argmax(similarity).item() + 1
    assert first["neighbours"][0] == [plot.token_labels(tokenizer, [best])[0], pytest.approx(similarity.max().item(), abs=1e-3)]


# -- every checkpoint kind


def variant(trained_run, folder, meta=None, **options):
    """The trained run's checkpoint with a fresh model of another kind (and another tokenizer)."""
    state = checkpoint.load(trained_run / "ckpt.pt")
    if meta:
        state["meta"], options["vocab_size"] = meta, meta["vocab_size"]
    torch.manual_seed(0)
    config = GPTConfig(**{**state["model_config"], **options})
    model = GPT(config, attention_pattern(config))
    state["model_config"], state["model"] = dataclasses.asdict(model.config), model.state_dict()
    folder.mkdir()
    checkpoint.save(state, folder / "ckpt.pt")
    return folder


def gpt2_meta():
    try:
        GPT2Tokenizer()
    except TokenizerUnavailable as e:
        skip_for_missing_data(f"GPT-2's rank file is not cached ({e}); set TIKTOKEN_CACHE_DIR")
    return {"tokenizer": "gpt2", "encoding": "r50k_base", "vocab_size": 50257}


@pytest.mark.parametrize("kind", ["rope", "sliding", "bigbird", "bpe", "gpt2"])
def test_every_checkpoint_kind(kind, trained_run, shakespeare_text, tmp_path):
    if kind == "bpe":
        ranks, _ = train_bpe(shakespeare_text[:3000], 300)
        meta = {"tokenizer": "bpe", "pattern": "gpt2", "vocab_size": len(ranks), "ranks": ranks_to_base64(ranks)}
    options = {"rope": dict(pos_emb="rope", norm="rmsnorm", qk_norm=True),
               "sliding": dict(pos_emb="rope", attn_pattern="sliding", attn_window=4),
               "bigbird": dict(attn_pattern="bigbird", bigbird_window=3, bigbird_global=1, bigbird_random=1),
               "bpe": dict(meta=meta if kind == "bpe" else None), "gpt2": dict(meta=gpt2_meta() if kind == "gpt2" else None)}
    run_dir = variant(trained_run, tmp_path / kind, **options[kind])
    server = serve_in_thread(run_dir)
    try:
        _, model, tokenizer = model_of(run_dir)
        text = "ROMEO:\nBut soft, what light through yonder window breaks?"
        status, answer = call(server, "/api/analyze", {"text": text})
        assert status == 200
        ids = tokenizer.encode(text)[-explore.engine.context_length(model.config):]  # sample.py's crop
        assert answer["ids"] == ids
        maps = plot.attention_maps(model, torch.tensor([ids]))[:, 0]
        assert answer["attention"][1][1][-1] == pytest.approx(maps[1, 1, -1].tolist(), abs=1e-6)
        if kind == "sliding":  # the window: the last 4 tokens, nothing before
            assert answer["masks"][0][-1] == "0" * (len(ids) - 4) + "1111" and len(ids) == 2 * 3 + 1
        if kind == "bigbird":  # token 0 is global, then the window of 3, and 1 random earlier one
            assert all(row[0] == "1" and row[-3:].strip("1") == "" for row in answer["masks"][0][3:])
            assert all(row.count("1") == 5 for row in answer["masks"][0][5:])
        for path, body in [("/api/next", {"text": text}), ("/api/generate", {"text": text, "steps": 5}),
                           ("/api/embeddings", None), ("/api/info", None)]:
            status, answer = call(server, path, body)
            assert status == 200, answer
        assert answer["tokenizer"] == tokenizer.kind
        status, answer = call(server, "/api/metrics")  # a checkpoint without a metrics file beside it
        assert status == 200 and not answer["available"] and "no metrics.jsonl" in answer["why"]
    finally:
        server.shutdown()
        server.server_close()


# -- bad input: one line, or a 4xx, and the server keeps serving


def raw_request(server, request_bytes):
    """Send bytes as they are; the answer's status code."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=60) as s:
        s.sendall(request_bytes)
        return int(s.recv(1 << 16).split(b" ")[1])


@pytest.mark.parametrize("path, body, status", [
    ("/api/next", b"{not json", 400), ("/api/next", b"[1, 2]", 400), ("/api/next", b"\xff\xfe", 400),
    ("/api/analyze", {"text": 5}, 400), ("/api/next", {"temperature": "hot"}, 400),
    ("/api/next", {"top_p": 2}, 400), ("/api/next", {"temperature": float("nan")}, 400),
    ("/api/generate", {"steps": -1}, 400), ("/api/generate", {"steps": 10**6}, 400),
    ("/api/generate", {"seed": 2**70}, 400), ("/api/load", {"name": "../../etc/passwd"}, 400),
    ("/api/nothing", {}, 404), ("/api/info", {}, 405), ("/api/analyze", None, 405),
])
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(served, path, body, status):
    raw = body if isinstance(body, bytes) else None
    got, answer = call(served, path, None if raw else body, raw=raw)
    assert got == status and answer["error"]
    assert call(served, "/api/info")[0] == 200


def test_bodies_without_a_length_or_too_long_and_foreign_hosts_are_refused(served):
    port = served.server_port
    assert raw_request(served, b"POST /api/next HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port) == 411
    huge = b"POST /api/next HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n{" % (port, 10**9)
    assert raw_request(served, huge) == 413
    # a page of another site that renamed itself 127.0.0.1 (DNS rebinding) sends its own name
    assert call(served, "/api/info", headers={"Host": "evil.example:80"})[0] == 403
    for method in ("PUT", "DELETE", "HEAD"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request(method, "/api/info")
        assert connection.getresponse().status == 405
        connection.close()
    assert call(served, "/api/info")[0] == 200


def test_unknown_characters_are_shown_and_a_megabyte_is_cropped(served, trained_run):
    status, answer = call(served, "/api/analyze", {"text": "café ROMEO€"})
    assert status == 200 and answer["unknown"] == ["é", "€"] and answer["text"] == "caf ROMEO"
    block_size = model_of(trained_run)[1].config.block_size
    status, answer = call(served, "/api/analyze", {"text": "a" * 1_000_000 + TEXT})
    assert status == 200 and len(answer["ids"]) == block_size and answer["text"].endswith(TEXT)
    status, answer = call(served, "/api/next", {"text": ""})  # nothing typed: sample.py's newline
    assert status == 200


def test_the_page_is_one_file_that_fetches_nothing_from_elsewhere(served):
    with urllib.request.urlopen(f"http://127.0.0.1:{served.server_port}/", timeout=60) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "<script>" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page


# -- the run folder: watched, never written


def test_a_newer_checkpoint_is_offered_and_loaded_and_nothing_is_written(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns(".babygpt.lock"))
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    server = serve_in_thread(run_dir)
    try:
        status, answer = call(server, "/api/status")
        assert status == 200 and answer["loaded"] == "ckpt.pt" and answer["newer"] == []
        assert call(server, "/api/metrics")[1]["eval"] == loss_curves(read_metrics(run_dir))["eval"]
        later = before["last.pt"] + 10**9
        os.utime(run_dir / "last.pt", ns=(later, later))  # as when train.py writes a new last.pt
        assert call(server, "/api/status")[1]["newer"] == ["last.pt"]
        status, info = call(server, "/api/load", {"name": "last.pt"})
        assert status == 200 and info["path"].endswith("last.pt")
        assert call(server, "/api/status")[1]["newer"] == []
        for path, body in [("/api/analyze", {"text": TEXT}), ("/api/generate", {"text": TEXT, "steps": 3}),
                           ("/api/embeddings", None)]:
            assert call(server, path, body)[0] == 200
        (run_dir / "ckpt.pt").unlink()  # gone: one line for the page, the loaded model stays
        assert "not found" in call(server, "/api/load", {"name": "ckpt.pt"})[1]["error"]
    finally:
        server.shutdown()
        server.server_close()
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert after == {**{k: v for k, v in before.items() if k != "ckpt.pt"}, "last.pt": later}


# -- the command line: 127.0.0.1 only, a port in use, a missing run


def other_local_addresses():
    """Addresses of this machine other than 127.0.0.1: another loopback address, and its network ones."""
    addresses = {"127.0.0.2"}
    try:
        addresses |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    return sorted(addresses - {"127.0.0.1"})


def test_it_listens_on_127_0_0_1_only(served):
    assert served.server_address[0] == "127.0.0.1"
    for address in other_local_addresses():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, served.server_port), timeout=10).close()


def test_explore_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main(["explore", "--help"])
    assert exit_info.value.code == 0 and "--no_open" in capsys.readouterr().out


def test_a_port_in_use_and_a_missing_run_are_one_line(served, trained_run, tmp_path, capsys):
    port = str(served.server_port)
    assert f"port {port} is in use" in fails(plot.main, ["explore", "--ckpt", trained_run, "--port", port,
                                                         "--no_open"], capsys)
    assert "not found" in fails(plot.main, ["explore", "--ckpt", tmp_path / "nope", "--no_open"], capsys)
    assert "--port must be" in fails(plot.main, ["explore", "--ckpt", trained_run, "--port", "70000"], capsys)
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert "not a babygpt checkpoint" in fails(plot.main, ["explore", "--ckpt", tmp_path], capsys)
    torch.save({"format": "babygpt-checkpoint", "run": os.system}, tmp_path / "ckpt.pt")  # a pickled function
    assert "could run code" in fails(plot.main, ["explore", "--ckpt", tmp_path], capsys)
