"""
Checkpoints and everything else a training run writes into out_dir, written so a crash never destroys a good
one, and read so a file from a stranger can never run code. Skip on a first read of train.py: it calls these
in one line each (prepare_out_dir, MetricsLog, Saver, rng_state).

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, list, dict):
    format, version   "babygpt-checkpoint", 1
    model             the model's state_dict (of the plain module, never the torch.compile wrapper)
    model_config      GPTConfig as a dict
    train_config      TrainConfig as a dict
    meta              the tokenizer description from meta.json (vocabulary etc.)
    optimizer         the optimizer's state_dict
    iter_num          optimizer steps taken so far
    best_val_loss     the lowest validation loss seen in this run
    rng               random-number-generator states (tensors), so a resumed run continues exactly
Because it holds nothing else, torch.load(path, weights_only=True) reads it, and weights_only refuses any
pickled object that would execute code while loading.

What train.py writes into --out_dir:
    ckpt.pt        the checkpoint with the best validation loss (what sample.py reads)
    last.pt        the latest checkpoint (what --resume reads): written at each evaluation, every
                   save_interval steps, and when the run is stopped by Ctrl-C or SIGTERM
    metrics.jsonl  one JSON object per line. Every log_interval steps: iter, tokens, train_loss (that step's
                   batch: noisy), lr, ms_per_iter, tokens_per_s. At every evaluation, its own line: iter, tokens,
                   eval_train_loss and val_loss (each averaged over eval_iters batches), val_bpc (validation
                   bits per character: comparable across tokenizers), lr, eval_seconds (the time the evaluation
                   took: losses, sample, save). Older runs wrote eval_train_loss as
                   train_loss on evaluation lines; plot.py reads both.
    loss.png       the loss curves so far, redrawn after each evaluation (loss_plot.py)
    .babygpt.lock  the pid of the run writing here (locks.lock_folder): a second run into this folder is refused
"""

import dataclasses
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist

from babygpt import files, locks, memory
from babygpt.attention_patterns import attention_pattern
from babygpt import optimizer as optimizer_state
from babygpt.cli import UserError, check_preset_agrees, float32_problem, load_preset, type_problem
from babygpt.distributed import barrier
from babygpt.files import WriteError, write_atomically
from babygpt.metrics import refuse_earlier_metrics
from babygpt.stopping import diverged_message
from babygpt.tokenizer import same_tokenizer, validate_meta
from model import GPT, GPTConfig

FORMAT = "babygpt-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "train_config", "meta", "iter_num", "best_val_loss")


class CheckpointError(Exception):
    """The file is missing, unreadable, unsafe, or not a babygpt checkpoint."""


def make_checkpoint(model, optimizer, model_config, train_config, meta, iter_num, best_val_loss, rng):
    """The dict described at the top of this file: the plain model's weights (never the torch.compile or DDP
    wrapper's), the settings as plain dicts, and the random streams."""
    return {
        "format": FORMAT, "version": VERSION,
        "model": model.state_dict(),
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
        "meta": meta,
        "optimizer": optimizer.state_dict(),
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "rng": rng,
    }


def save(checkpoint, path):
    """Write atomically (files.write_atomically: a temporary file in the same folder, flushed to disk, then
    renamed over `path`). A crash or a full disk at any moment leaves either the old file or the new one, never
    half of one. Every failure torch.save can raise on a bad disk becomes a CheckpointError."""
    try:
        write_atomically(path, lambda f: torch.save(checkpoint, f))
    except WriteError as e:
        raise CheckpointError(f"{e}; the previous checkpoint is kept") from None


def load(path, map_location="cpu"):
    """Read and check a checkpoint. Raises CheckpointError with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file or use --out_dir")
    try:
        files.regular_file(path, "checkpoint")  # not found, a FIFO (torch.load would wait forever), a loop ...
    except UserError as e:
        raise CheckpointError(str(e)) from None
    check_unpacked_size(path)
    try:
        with warnings.catch_warnings():  # a garbage file can make torch warn before it fails: one line is enough
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused something. "GLOBAL" means the file asks to import a Python object (a class or a
        # function such as os.system) -- the way a pickle runs code. Anything else: not a torch file at all.
        if "GLOBAL" in str(e):
            raise CheckpointError(f"{path} contains Python objects that could run code when loaded; refusing to load it") from None
        raise CheckpointError(f"{path} is not a babygpt checkpoint (unreadable by torch.load)") from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except Exception:  # torch raises RuntimeError, EOFError, zipfile errors ... for truncated or foreign files
        raise CheckpointError(f"{path} is not a babygpt checkpoint (unreadable by torch.load)") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a babygpt checkpoint")
    if checkpoint.get("version") != VERSION:
        version = checkpoint.get("version")
        shown = f"{version!r} (a {type(version).__name__}, not a number)" if type(version) is not int else version
        raise CheckpointError(f"{path} has checkpoint version {shown}; this babygpt reads version {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is incomplete (missing {', '.join(missing)})")
    try:
        validate_meta(checkpoint["meta"], f"{path} (meta)")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    validate_contents(checkpoint, path)
    return checkpoint


def check_unpacked_size(path):
    """torch.save writes a zip archive of stored (uncompressed) entries, so a real checkpoint unpacks to about
    its own size. A hand-made archive of compressed entries can unpack to gigabytes from a few megabytes (a zip
    bomb): refuse it from the archive's table of contents, in milliseconds, before torch.load unpacks anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip: torch.load will say what it is
    size = path.stat().st_size
    if declared > 2 * size + (64 << 20):
        raise CheckpointError(f"{path} unpacks to {memory.gigabytes(declared)} from a {size / 2**20:.1f} MB file "
                              f"(compressed entries; torch.save never writes those); refusing to load it")


def check_size(model_config, weights, path):
    """A hand-edited n_embd of 10**6 must be refused in one line, not found out by a MemoryError or a machine
    that swaps for an hour; and an n_layer of 10**5 before load_model spends minutes building it."""
    try:
        memory.check_model_fits(GPTConfig(**model_config), batch_size=0, device="cpu")
    except UserError as e:
        raise CheckpointError(f"{path}: model_config {e}") from None
    layers = {name.split(".")[1] for name in weights if name.startswith("blocks.")}
    if len(layers) != model_config["n_layer"]:
        raise CheckpointError(f"{path}: the weights do not fit model_config (n_layer {model_config['n_layer']}, "
                              f"but the weights have {len(layers)} blocks)")


def validate_contents(checkpoint, path):
    """The fields a tampered or damaged file could get wrong, each refused by name before anything uses it."""
    model_config = checkpoint["model_config"]
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: model_config must be a dict")
    # logit_softcap (logits squashed into (-cap, cap)) is an option babygpt no longer has; off, it did nothing
    if model_config.get("logit_softcap", 0.0) in (0, 0.0):
        model_config.pop("logit_softcap", None)
    else:
        raise CheckpointError(f"{path} was trained with logit_softcap {model_config['logit_softcap']!r}, an "
                              f"option this babygpt no longer has; train it again without it")
    if problem := type_problem(GPTConfig, model_config) or float32_problem(model_config):
        raise CheckpointError(f"{path}: invalid model_config ({problem})")
    try:
        GPTConfig(**model_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model_config ({e})") from None
    if model_config["vocab_size"] != checkpoint["meta"]["vocab_size"]:
        raise CheckpointError(f"{path}: model_config has vocab_size {model_config['vocab_size']} but meta has "
                              f"{checkpoint['meta']['vocab_size']} characters")
    if not isinstance(checkpoint["train_config"], dict):
        raise CheckpointError(f"{path}: train_config must be a dict")
    if type(checkpoint["iter_num"]) is not int or checkpoint["iter_num"] < 0:
        raise CheckpointError(f"{path}: iter_num must be a non-negative integer, got {checkpoint['iter_num']!r}")
    if type(checkpoint["best_val_loss"]) not in (int, float):
        raise CheckpointError(f"{path}: best_val_loss must be a number, got {checkpoint['best_val_loss']!r}")
    weights = checkpoint["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in weights.items()):
        raise CheckpointError(f"{path}: model must map parameter names to tensors")
    check_size(model_config, weights, path)
    # Names and shapes are load_model's to check (load_state_dict names the first that does not fit). Every
    # weight of a GPT is floating point, and load_state_dict would silently cast integers into garbage.
    for name, tensor in weights.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: weight {name} holds {tensor.dtype} numbers, not floating point "
                                  f"(a hand-made or damaged file)")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values (a damaged or diverged model)")


def resolve(out_dir, ckpt=None):
    """The file sample.py and plot.py read. --ckpt means the same in both: a checkpoint file, or a run's folder
    (then its ckpt.pt, the best one); without --ckpt, OUT_DIR/ckpt.pt."""
    if ckpt and not Path(ckpt).is_dir():
        return Path(ckpt)
    return Path(ckpt or out_dir) / "ckpt.pt"


def load_model(checkpoint, device="cpu", source="the checkpoint"):
    """The GPT stored in a loaded checkpoint, on `device`, in eval mode (dropout off)."""
    config = GPTConfig(**checkpoint["model_config"])
    model = GPT(config, attention_pattern(config))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:  # missing or unexpected names, wrong shapes: the weights do not fit model_config
        reason = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{source}: the weights do not fit model_config ({reason})") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# the random streams: saved with every checkpoint, so that a resumed run draws exactly the batches it would have


def rng_state(data_generators, device_type):
    """This process's random streams, for exact resume: the torch (dropout) state and the state of each of its
    micro-batch slots' data generators. Cheap: taken before every step, kept only when a checkpoint is written."""
    state = {"torch": [torch.get_rng_state()], "data": [g.get_state() for g in data_generators]}
    if device_type == "cuda":
        state["cuda"] = [torch.cuda.get_rng_state()]
    return state


def gather_rng_state(state, world_size):
    """Under torchrun each rank holds only its own streams: collect every rank's, in rank order (so "data" stays
    in slot order), for rank 0 to write. Every rank must call this at the same point."""
    if world_size == 1:
        return state
    gathered = [None] * world_size
    dist.all_gather_object(gathered, state)
    return {key: [s for rank_state in gathered for s in rank_state[key]] for key in state}


def restore_rng_state(state, data_generators, device_type, rank=0, first_slot=0):
    """Put back this rank's streams. A slot or rank the checkpoint does not have (more processes or more
    accumulation steps than before) keeps its fresh seed: the run continues, just not bit-exactly."""
    if rank < len(state["torch"]):
        torch.set_rng_state(state["torch"][rank])
    if device_type == "cuda" and rank < len(state.get("cuda", [])):
        torch.cuda.set_rng_state(state["cuda"][rank])
    for slot, generator in enumerate(data_generators, start=first_slot):
        if slot < len(state["data"]):
            generator.set_state(state["data"][slot])


# ----------------------------------------------------------------------------------------------------------------
# out_dir: checked before training, metrics appended while training, checkpoints saved by one object


def load_for_resume(flags, preset, defaults, model_defaults):
    """--resume: OUT_DIR/last.pt, checked, and the settings the run continues with: the saved run's,
    then the flags. The model's shape cannot change (its weights would not fit). The folder read is the
    folder written: flags["out_dir"] is set here, so the out_dir stored in the checkpoint (where the run
    was first started, history) can never send the resumed run's writes into another run's folder.
    Returns (the checkpoint, the settings)."""
    out_dir = flags.setdefault("out_dir", defaults["out_dir"])
    try:
        resumed = load(Path(out_dir) / "last.pt")
    except CheckpointError as e:
        raise UserError(f"cannot resume: {e}") from None
    for name in model_defaults:
        if name in flags and flags[name] != resumed["model_config"].get(name):
            raise UserError(f"--{name} cannot change when resuming (the checkpoint has {resumed['model_config'].get(name)})")
    # defaults first: a checkpoint from before a setting existed resumes with that setting's default
    saved = {**defaults, **resumed["model_config"], **resumed["train_config"]}
    if preset is not None:  # the first command again, with --resume added: fine if the preset (and its model) agrees
        check_preset_agrees(preset, {**model_defaults, **load_preset(preset, defaults)}, saved, flags)
    return resumed, {**saved, **flags, "resume": True}


def prepare_out_dir(out_dir, resume, overwrite, machine):
    """Never replace a previous run's checkpoints unless asked to; find out now, not at the first save, whether
    out_dir can be written; and lock it (locks.lock_folder), so that a second run into the same folder stops
    at once with the other one's pid instead of writing over its checkpoints and metrics."""
    out_dir = Path(out_dir)
    if not resume and not overwrite and any((out_dir / name).exists() for name in ("ckpt.pt", "last.pt")):
        raise UserError(f"{out_dir} already holds checkpoints of an earlier run; use --resume to continue it, "
                        f"--overwrite to start over, or another --out_dir")
    refuse_earlier_metrics(out_dir, resume, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{machine.rank}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}") from None
    if machine.master:
        locks.lock_folder(out_dir, exclusive=True, busy_hint="wait for that run to end, or use another --out_dir")
    barrier(machine.world_size)  # every rank has checked out_dir before rank 0 writes into it


class Saver:
    """Owns the run's two checkpoints: last.pt (the latest state, what --resume reads) and ckpt.pt (the best
    validation loss, what sample.py reads). It knows which iteration last.pt holds, never saves weights that
    are not finite numbers, and under torchrun gathers every rank's random streams for rank 0 to write."""

    def __init__(self, out_dir, model, optimizer, model_config, cfg, meta, machine, data_generators):
        self.out_dir, self.model, self.optimizer, self.machine = Path(out_dir), model, optimizer, machine
        self.model_config, self.cfg, self.meta, self.data_generators = model_config, cfg, meta, data_generators
        self.best_val_loss = float("inf")
        self.last_saved = None  # the iteration last.pt holds

    def rng_now(self):
        """This process's random streams as they are now (see rng_state)."""
        return rng_state(self.data_generators, self.machine.device_type)

    def restore(self, resumed, first_slot, max_iters):
        """Load a resumed run's weights, optimizer state and random streams; return its iteration."""
        if resumed["iter_num"] > max_iters:
            raise UserError(f"{self.out_dir / 'last.pt'} is already at iteration {resumed['iter_num']}, past "
                            f"--max_iters {max_iters}; give a larger --max_iters to train on")
        if not same_tokenizer(resumed["meta"], self.meta):
            raise UserError(f"the tokenizer (vocabulary) in {self.cfg.data_dir} differs from the one "
                            f"{self.out_dir / 'last.pt'} was trained on; resume with the same --data_dir")
        missing = [key for key in ("optimizer", "rng") if key not in resumed]  # (load() checks the rest)
        if missing:  # said as load() says it of the parts every checkpoint has
            raise UserError(f"cannot resume: {self.out_dir / 'last.pt'} is incomplete (missing {missing[0]})")
        try:
            self.model.load_state_dict(resumed["model"])
            optimizer_state.load_state(self.optimizer, resumed["optimizer"])
            restore_rng_state(resumed["rng"], self.data_generators, self.machine.device_type, self.machine.rank,
                              first_slot)
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:  # a damaged or hand-edited last.pt
            reason = str(e).strip().splitlines()[-1]
            raise UserError(f"cannot resume: {self.out_dir / 'last.pt'} does not fit this run ({reason})") from None
        self.best_val_loss, self.last_saved = resumed["best_val_loss"], resumed["iter_num"]
        print(f"resuming {self.out_dir / 'last.pt'} at iteration {self.last_saved} "
              f"(best val loss {self.best_val_loss:.4f})")
        return resumed["iter_num"]

    def diverged(self, what, iter_num):
        """The error that stops a run whose loss or weights stopped being finite numbers: one line
        with the usual cures, and which last.pt is kept."""
        return UserError(diverged_message(what, iter_num, self.cfg, self.machine.dtype, self.last_saved))

    def record(self, val_loss):
        """Note an evaluation's val loss; True if it is the best so far (then ckpt.pt should be saved)."""
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        return improved

    def save(self, iter_num, rng, also_best=False):
        """last.pt (and ckpt.pt if asked) := the state at iter_num, whose loss was just found finite. `rng`: the
        random states from before this iteration's batch was drawn. Never half a file."""
        rng = gather_rng_state(rng, self.machine.world_size)  # every rank takes part
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise self.diverged("the weights are no longer finite numbers", iter_num)
        if not self.machine.master:
            return
        try:
            state = make_checkpoint(self.model, self.optimizer, self.model_config, self.cfg, self.meta, iter_num,
                                    self.best_val_loss, rng)
            if self.last_saved != iter_num:
                save(state, self.out_dir / "last.pt")
            if also_best:
                save(state, self.out_dir / "ckpt.pt")
        except CheckpointError as e:
            raise UserError(str(e)) from None
        self.last_saved = iter_num
