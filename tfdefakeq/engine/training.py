"""The fit loop behind `python -m tfdefakeq.train`: a float detector trained from scratch (or from
pretrained weights), or a float detector fine-tuned quantization-aware under a scheme.

Writes OUT/model.weights.h5 + OUT/model.manifest.json + OUT/history.csv. The state is saved every epoch
under OUT/backup (model, optimizer and epoch in one tf.train checkpoint); a resumed run continues an
interrupted one from there and reaches the weights the uninterrupted run would have reached.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tfdefakeq.core.errors import UserError


def _build_model(args, input_shape):
    """(model, manifest fields) for a fresh float model or a QAT model from --init."""
    from tfdefakeq.backbones import build
    from tfdefakeq.core.manifest import Preprocess

    if args.init is None:
        if args.scheme:
            raise UserError("--scheme needs --init: QAT fine-tunes a trained float model")
        import inspect

        from tfdefakeq.backbones import backbone_info

        kwargs = {"highpass": True} if args.highpass else {}
        if args.width is not None:
            params = inspect.signature(backbone_info(args.backbone).builder).parameters
            name = next((n for n in ("width", "alpha") if n in params), None)
            if name is None:
                raise UserError(f"--width: backbone {args.backbone} has no width multiplier")
            kwargs[name] = args.width
        model = build(args.backbone, input_shape=input_shape, **kwargs)
        for flag in ("fake_class", "preprocess"):
            if getattr(args, flag, None) is not None:
                raise UserError(f"--{flag.replace('_', '-')} applies to --init with a Keras model file (.keras / .h5)")
        return model, dict(backbone=args.backbone, scheme="float", preprocess=Preprocess(), build_kwargs=kwargs)
    from tfdefakeq.engine.importer import is_user_model_file
    from tfdefakeq.engine.modelio import architecture_path, import_detector, load_detector

    fake_class, preprocess = getattr(args, "fake_class", None), getattr(args, "preprocess", None)
    if is_user_model_file(args.init):  # a user's Keras model: imported as a float custom detector
        model, base, architecture = import_detector(args.init, fake_class, preprocess)
    else:
        model, base = load_detector(args.init, fake_class, preprocess)
        custom = base.backbone == "custom" and architecture_path(args.init).is_file()
        architecture = architecture_path(args.init).read_text() if custom else None
    if base.format != "keras" or base.scheme != "float":
        raise UserError(f"{args.init}: --init needs a float Keras model (this one is {base.format}/{base.scheme})")
    if args.input_size is not None and list(base.input_shape) != list(input_shape):
        raise UserError(f"{args.init}: model input {base.input_shape} does not match --input-size {args.input_size}")
    return model, dict(backbone=base.backbone, scheme="float", preprocess=base.preprocess, build_kwargs=base.build_kwargs,
                       train_generators=base.train_generators, source=base.source, fake_class=base.fake_class,
                       architecture_sha256=base.architecture_sha256, architecture=architecture)


def adaptive_options(args, out: Path) -> dict:
    """quantize() keyword arguments from the adaptive flags; a plan saved in `out` (a resumed run)
    or given with --bit-plan is reused as it is."""
    from tfdefakeq.quant.horizontal import QuantPlan

    scheme = args.scheme or ""
    given = [flag for flag, v in (("--avg-bits", args.avg_bits), ("--budget-bytes", args.budget_bytes),
                                  ("--bit-plan", args.bit_plan), ("--salient-ratio", args.salient_ratio),
                                  ("--frontier", args.frontier),
                                  ("--no-int2", None if getattr(args, "int2", True) else True)) if v is not None]
    if scheme != "adaptive":
        if given:
            raise UserError(f"{given[0]} needs --scheme adaptive")
        return {}
    if args.avg_bits is not None and args.budget_bytes is not None:
        raise UserError("give one budget: --avg-bits or --budget-bytes")
    if args.bit_plan and args.frontier:
        raise UserError("--frontier needs a measured plan: it cannot be drawn for a given --bit-plan")
    saved = out / "bit_plan.json"
    plan_file = args.bit_plan or (saved if args.resume and saved.exists() else None)
    options = {}
    if args.salient_ratio is not None:
        if not 0 <= args.salient_ratio < 1:
            raise UserError(f"--salient-ratio must be in [0, 1), got {args.salient_ratio}")
        options["salient_ratio"] = args.salient_ratio
    if plan_file:
        # the file's split is used as it is ({} = none); --salient-ratio picks channels for a given plan
        # without any (a resumed run's saved plan is the one it trained with: nothing is picked again)
        plan = QuantPlan.load(plan_file)
        pick = bool(args.bit_plan) and not plan.salient_channels and args.salient_ratio is not None
        return dict(options, bit_plan=plan.weight_bits, salient_channels=None if pick else plan.salient_channels,
                    per_tensor=plan.per_tensor, channel_choice=args.channel_choice)
    budget = {"bytes": args.budget_bytes} if args.budget_bytes is not None else args.avg_bits
    return dict(options, budget=budget, channel_choice=args.channel_choice, frontier_path=args.frontier,
                int2=getattr(args, "int2", True))


def shorten_batchnorm_memory(model, total_steps: int) -> int:
    """Caps each BatchNormalization momentum at 1 - 10 / total_steps; returns how many changed.

    keras.applications' MobileNets/EfficientNets use 0.999 (a ~1,000-step memory, tuned for
    ImageNet's long runs). In a short from-scratch run the moving statistics then still hold their
    initial values at the end: measured, MobileNetV2 at 64 px, 8 epochs (1,328 steps): train AUC
    0.82, validation AUC exactly 0.5 (constant outputs in inference mode)."""
    from tfdefakeq.core.tfcompat import keras

    cap = 1.0 - 10.0 / max(total_steps, 20)
    changed = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > cap:
            layer.momentum = cap
            changed += 1
    if changed:
        print(f"BatchNorm momentum capped at {cap:.4f} in {changed} layers (a {total_steps}-step run)", flush=True)
    return changed


def set_batchnorm_statistics(model, x) -> int:
    """Sets every BatchNormalization's moving mean and variance to the statistics of the images `x`
    (one training-mode pass with momentum 0; the momenta are restored). Returns how many layers.

    An untrained net keeps its initial moving statistics (mean 0, variance 1), and in inference mode
    its activations then shrink or grow layer after layer: measured, untrained MobileNetV3-Small at
    224 px reaches activation scales of 4e-6, so the quantized model's scales are unlike any trained
    model's (XNNPACK refused 26 int8 ADDs whose input/output scale ratio fell below 2^-10, and int8
    ran 3.5x slower than float32). With statistics from data the activations stay near unit
    variance, as a trained model's do. Changes no trainable weight."""
    from tfdefakeq.core.tfcompat import keras

    batchnorms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in batchnorms]
    for bn in batchnorms:
        bn.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for bn, momentum in zip(batchnorms, momenta):
            bn.momentum = momentum
    return len(batchnorms)


class EpochCheckpoint:
    """Saves model + optimizer + finished epoch as one tf.train checkpoint after every epoch.

    (Keras' BackupAndRestore restores the weights, but the data order of a resumed run would
    restart from epoch 0's; with the epoch in hand we rebuild the input from that epoch on.)
    """

    def __init__(self, directory, model, restore_from=None):
        """directory: where this process writes; restore_from: where the run's checkpoints are read
        (the chief's folder; a non-chief worker writes its own copy elsewhere)."""
        from tfdefakeq.core.tfcompat import keras, tf

        self.epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=2)
        self.restore_from = Path(restore_from or directory)
        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.epoch.assign(epoch)
                outer.manager.save(checkpoint_number=epoch)  # TF writes the index file last: atomic

        self.callback = _Callback()

    def restore(self) -> int:
        """Restores the last checkpoint; returns the first epoch still to run."""
        from tfdefakeq.core.tfcompat import tf

        latest = tf.train.latest_checkpoint(str(self.restore_from))
        if latest is None:
            raise UserError(f"{self.restore_from}: no finished epoch to resume from (remove the folder to start over)")
        self.checkpoint.restore(latest)  # optimizer slots are restored when first created
        return int(self.epoch.numpy()) + 1


class BestEpoch:
    """Keeps the weights of the epoch with the best validation metric, and puts them back at the end.

    The same QAT run can end worse than it was an epoch earlier (measured: ResNet-18 adaptive at
    fp32/10.7, seed 1, val AUC 0.933 after epoch 2 and 0.867 after epoch 3, held-out AP 8.9 pp
    below seeds 0 and 2), so the last epoch is not what a user wants by default. The kept weights
    (of `model`, the student when distilling) and the best value live in a tf.train checkpoint of
    their own, written when the metric improves (strictly: the earliest of equal epochs), so a
    resumed run knows them. Call `resume` BEFORE the run's epoch checkpoint is restored, which then
    overwrites the weights with the last epoch's; `restore_kept` at the end.

    Every worker of a cluster must put back the same weights: reading a BatchNorm moving statistic
    (an on-read variable) averages it over the workers, so one worker left at its last epoch would
    blend into what the chief saves (measured: moving variances off by up to 100%). A non-chief
    worker writes into a folder of its own and, resumed, may not write again; so the checkpoint to
    put back is the last one this process wrote or, if none, the one it resumed from.
    """

    def __init__(self, directory, model, monitor: str = "val_auc", restore_from=None):
        from tfdefakeq.core.tfcompat import keras, tf

        self.monitor = monitor
        self.value = tf.Variable(-float("inf"), dtype=tf.float64, trainable=False)
        self.epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, value=self.value, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=1)
        self.restore_from = Path(restore_from or directory)
        self.kept_path: str | None = None  # the checkpoint holding the kept epoch
        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.update(epoch, (logs or {}).get(outer.monitor))

        self.callback = _Callback()

    def update(self, epoch: int, value) -> bool:
        """Records epoch `epoch` if its metric beats the best so far; True if it did."""
        if value is None:
            raise UserError(f"--keep best: training logged no {self.monitor} (is the val split empty?)")
        if not float(value) > float(self.value.numpy()):
            return False
        self.value.assign(float(value))
        self.epoch.assign(epoch)
        self.kept_path = self.manager.save(checkpoint_number=epoch)  # the index file is written last: atomic
        return True

    def resume(self) -> int:
        """Loads the kept weights and value of the run being resumed (from `restore_from`), if it
        kept an epoch; returns that epoch or -1."""
        from tfdefakeq.core.tfcompat import tf

        latest = tf.train.latest_checkpoint(str(self.restore_from))
        if latest is not None:
            self.kept_path = latest
        return self.restore_kept()

    def restore_kept(self) -> int:
        """Puts the kept epoch's weights (and value) back into the model; returns the epoch, or -1
        when no epoch was kept (every value NaN, or nothing run)."""
        if self.kept_path is None:
            return -1
        self.checkpoint.restore(self.kept_path).assert_existing_objects_matched()
        return int(self.epoch.numpy())


def read_history(path: Path, epochs: int, complete: bool = True) -> list[dict]:
    """The metrics of each epoch 0 .. epochs - 1 in a run's history.csv, as floats, found by the
    row's `epoch` column, not its position: a run interrupted after an epoch's row was logged and
    before its checkpoint reruns that epoch on --resume and logs it again (the last row counts).
    Raises UserError when an epoch has no row, unless not `complete` (then its metrics are {}: a
    non-chief worker's own log of a resumed run starts at the resumed epoch)."""
    import csv

    if not path.is_file():
        return []
    rows = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k != "epoch" and v not in ("", None)}
    missing = [e + 1 for e in range(epochs) if e not in rows]
    if missing and complete:
        raise UserError(f"{path}: no row for epoch(s) {missing} of {epochs}; the run's history is incomplete")
    return [rows.get(e, {}) for e in range(epochs)]


def load_pretrained(model, backbone: str, weights: str, build_kwargs: dict, partial: bool = False) -> dict[str, str]:
    """Loads ImageNet weights (keras.applications) or a weights file into `model` through the one
    strict loader, `backbones.weights.load_keras_weights`; says which layers loaded.

    A file that covers less than the backbone (every layer with weights but the head and the fixed
    front end) is refused unless `partial`, which loads what matches and lists what it skipped.
    Raises UserError when the backbone has no keras.applications twin or the download is impossible.
    Returns {our layer: file layer}.
    """
    from tfdefakeq.backbones import backbone_info
    from tfdefakeq.backbones.weights import load_keras_weights, not_loaded
    from tfdefakeq.core.tfcompat import keras

    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{path}: --weights file not found")
        mapping = load_keras_weights(model, path, partial=partial)
        source = str(path)
    else:
        app_name = backbone_info(backbone).keras_application
        if app_name is None:
            raise UserError(f"--weights imagenet: {backbone} has no keras.applications twin with ImageNet weights")
        constructor = getattr(keras.applications, app_name)
        kwargs = {"alpha": build_kwargs["alpha"]} if "alpha" in build_kwargs else {}
        try:
            reference = constructor(include_top=False, weights="imagenet", input_shape=model.input_shape[1:], **kwargs)
        except Exception as e:  # the download fails in many ways offline (URLError, HTTPError, OSError, ...)
            raise UserError(
                f"--weights imagenet: cannot get {app_name} ImageNet weights ({e.__class__.__name__}: {str(e).splitlines()[0][:120]}); "
                "offline, put the file Keras downloads into ~/.keras/models/ or pass --weights FILE.h5"
            ) from e
        with tempfile.TemporaryDirectory() as tmp:  # the reference as a weights file: one loader for both sources
            reference.save_weights(Path(tmp) / "imagenet.h5")
            mapping = load_keras_weights(model, Path(tmp) / "imagenet.h5", partial=partial)
        source = f"{app_name} ImageNet weights"
    if not mapping:
        raise UserError(f"--weights {weights}: no layer of {backbone} matches (names and shapes differ everywhere)")
    skipped = not_loaded(model, mapping)
    total = len(mapping) + len(skipped)
    print(f"loaded {source} into {len(mapping)} of {total} layers with weights of {backbone}"
          + (f"; left as built: {', '.join(skipped)}" if skipped else ""), flush=True)
    return mapping


def train_detector(args) -> int:
    """Runs the training `args` (the parsed command line of tfdefakeq.train) describe; returns 0."""
    from tfdefakeq import quant
    from tfdefakeq.data.augment import AugmentConfig
    from tfdefakeq.engine.distribute import is_chief, make_strategy, shard_by_data
    from tfdefakeq.data.folders import balanced_subset, generators_of, scan_forensynths
    from tfdefakeq.data.reader import make_dataset
    from tfdefakeq.core.manifest import Manifest, command_line, versions
    from tfdefakeq.engine.modelio import save_detector
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.core.tfcompat import keras

    out = Path(args.out)  # the command line was checked by tfdefakeq.train.check_args
    backup = out / "backup"  # the run's checkpoints (the chief's)
    if args.scheme:
        quant.qat.get_scheme(args.scheme)  # fail fast on a bad name

    strategy = make_strategy(args.strategy, args.logical_cpus)
    replicas = strategy.num_replicas_in_sync
    print(f"training on {replicas} replica(s) ({args.strategy} strategy)", flush=True)
    # Only the chief writes into --out; another worker writes the same files into a folder of its
    # own (saving may take part in collective ops, so every worker saves), removed at the end.
    write_out = out if is_chief(strategy) else Path(tempfile.mkdtemp(prefix="tfdefakeq-worker-"))
    if write_out != out:
        print(f"not the chief: this worker writes into {write_out} (removed at the end)", flush=True)
    final = write_out / "model.weights.h5"
    keras.utils.set_random_seed(args.seed)
    side = args.input_size or 64  # --init: the model's own size unless --input-size is given
    input_shape = (side, side, 3)
    train_samples = scan_forensynths(args.data, "train")
    val_samples = scan_forensynths(args.data, "val")
    if args.train_generators:
        known = generators_of(train_samples)
        unknown = sorted(set(args.train_generators) - set(known))
        if unknown:
            raise UserError(f"--train-generators: {', '.join(unknown)} not in {args.data}/train (has: {', '.join(known)})")
        train_samples = [s for s in train_samples if s.generator in args.train_generators]
        val_samples = [s for s in val_samples if s.generator in args.train_generators] or val_samples
    with strategy.scope():
        model, info = _build_model(args, input_shape)
        size = tuple(int(d) for d in model.input_shape[1:3])
        input_shape = (*size, 3)
        if args.weights:
            load_pretrained(model, info["backbone"], args.weights, info["build_kwargs"], partial=args.partial)
        preprocess = info["preprocess"]
        teacher = None
        if args.scheme:
            calib = balanced_subset(train_samples, args.calib_images, seed=args.seed)
            calib_images = preprocess.apply(load_images([s.path for s in calib], size))
            teacher = model  # quantize() builds a new graph; the float model stays as it is
            model = quant.quantize(model, args.scheme, calib_images, input_range=preprocess.input_range(),
                                   **adaptive_options(args, out))
            info["scheme"] = args.scheme
        write_out.mkdir(parents=True, exist_ok=True)  # the work starts: nothing is created for a run refused above
        if args.scheme:
            if model.quant_plan is not None and not (args.resume and (write_out / "bit_plan.json").exists()):
                model.quant_plan.save(write_out / "bit_plan.json", overwrite=True)  # a resumed run keeps the measured one

    val_ds = shard_by_data(make_dataset(val_samples, size, args.batch_size, training=False, preprocess=preprocess),
                           strategy)
    # One replica: the last batch of an epoch may be smaller. Several: every global batch is full
    # (drop_remainder), so a step averages --batch-size images whatever the number of replicas.
    drop_remainder = replicas > 1
    steps_per_epoch = len(train_samples) // args.batch_size if drop_remainder else -(-len(train_samples) // args.batch_size)
    if steps_per_epoch < 1:
        raise UserError(f"{args.data}/train: {len(train_samples)} images make no full batch of --batch-size "
                        f"{args.batch_size} (needed with {replicas} replicas)")
    if args.init is None:
        shorten_batchnorm_memory(model, steps_per_epoch * args.epochs)
    distill = args.distill == "on" or (args.distill == "auto" and args.scheme == "adaptive")
    if distill and teacher is None:
        raise UserError("--distill needs QAT (--init FLOAT --scheme S): the float model is the teacher")
    student = model
    with strategy.scope():
        if distill:
            from tfdefakeq.quant.distill import Distiller
            from tfdefakeq.quant.quantizers import quantizer_variables

            model = Distiller(student, teacher, alpha=args.kd_alpha, temperature=args.temperature,
                              feature_weight=args.feature_weight, total_steps=steps_per_epoch * args.epochs,
                              learn_steps=args.learn_steps == "on")
            if not model.learn_steps and not quantizer_variables(student.trainable_variables):
                raise UserError(f"--learn-steps off: --scheme {args.scheme} has no learned step sizes or ranges to keep fixed")
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps_per_epoch * args.epochs, alpha=0.01)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.AUC(from_logits=True, name="auc"), keras.metrics.BinaryAccuracy(threshold=0.0, name="acc")],
        )
        checkpoint = EpochCheckpoint(write_out / "backup", model, restore_from=backup)
        best = BestEpoch(write_out / "backup" / "best", student, restore_from=backup / "best") if args.keep == "best" else None
    if best is not None and args.resume and backup.exists():
        best.resume()  # first: the epoch checkpoint below then puts the last epoch's weights back
    initial_epoch = checkpoint.restore() if args.resume and backup.exists() else 0
    if initial_epoch:
        print(f"resuming after epoch {initial_epoch} from {backup}", flush=True)
    # Each epoch's batches depend on (seed, epoch) alone, so the resumed run sees what the
    # uninterrupted one would have seen.
    train_ds = make_dataset(train_samples, size, args.batch_size, training=True, preprocess=preprocess,
                            seed=args.seed, augment=not args.no_augment,
                            augment_config=AugmentConfig(blur_prob=args.aug_prob, jpeg_prob=args.aug_prob),
                            drop_remainder=drop_remainder, epochs=(initial_epoch, max(initial_epoch, args.epochs)))
    train_ds = shard_by_data(train_ds, strategy)
    # the best epoch and the history row are saved before the epoch checkpoint: an interruption
    # between them reruns that epoch (its row is then logged twice; read_history keeps the last)
    callbacks = ([best.callback] if best is not None else []) + \
        [keras.callbacks.CSVLogger(str(write_out / "history.csv"), append=args.resume), checkpoint.callback]
    if initial_epoch < args.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                  verbose=0 if args.quiet else 1 if sys.stdout.isatty() else 2)  # 2: one line per epoch in a log
    # the chief's history is the run's; a non-chief worker's (in its own folder, deleted below) may lack
    # the epochs before a resume
    history = read_history(write_out / "history.csv", args.epochs, complete=write_out == out)
    kept = len(history) - 1
    if best is not None:
        kept = best.restore_kept()  # the student's weights of its best epoch (on every worker)
        if kept < 0:  # every value NaN (e.g. a val split of one class): nothing to choose by
            kept = len(history) - 1
            print(f"--keep best: no epoch logged a finite {best.monitor}; kept the last epoch", flush=True)
        else:
            print(f"kept epoch {kept + 1} of {len(history)} (best {best.monitor} {best.value.numpy():.4f}; "
                  f"last epoch {history[-1].get(best.monitor, float('nan')):.4f})", flush=True)

    manifest = Manifest(
        backbone=info["backbone"],
        input_shape=list(input_shape),
        format="keras",
        scheme=info["scheme"],
        preprocess=preprocess,
        weight_bits=quant.weight_bits(student) if args.scheme else {},
        salient_channels=student.quant_plan.salient_channels if getattr(student, "quant_plan", None) else {},
        per_tensor=student.quant_plan.per_tensor if getattr(student, "quant_plan", None) else [],
        activation_bits=8 if args.scheme else None,
        dataset=str(Path(args.data)),
        train_generators=sorted(args.train_generators or info.get("train_generators", [])),
        metrics={**history[kept], "kept_epoch": kept + 1, "epochs": len(history), "kept_by": args.keep} if history else {},
        build_kwargs=info["build_kwargs"],
        source=info.get("source", {}),
        fake_class=info.get("fake_class"),
        architecture_sha256=info.get("architecture_sha256", ""),
        versions=versions(),
        command=command_line(),
    )
    save_detector(student, final, manifest, overwrite=True, architecture=info.get("architecture"))
    shutil.rmtree(write_out / "backup", ignore_errors=True)
    if write_out != out:
        shutil.rmtree(write_out, ignore_errors=True)
        print(f"not the chief: removed {write_out}")
    else:
        print(f"saved {final}")
    return 0
