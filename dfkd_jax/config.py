"""The base configuration every run starts from, and its validation.

Configs are code: ``configs/<dataset>/<method>.py`` calls ``base_config()``, lets a
method module set its published defaults (``dfkd_jax.methods.<name>.configure``),
then sets what that experiment changes. Every key a run can take exists here, so
``--config.<key>=<value>`` on an unknown key fails with the valid names.
"""

from __future__ import annotations

import difflib
import os

import ml_collections

from dfkd_jax import methods, objectives, synthesis
from dfkd_jax.engine.round import LOOPS
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import GENERATORS, parse_arch
from dfkd_jax.models.fast_conv import IMPLEMENTATIONS
from dfkd_jax.models.generators import INIT_SCHEMES
from dfkd_jax.pool import STORAGE_DTYPES
from dfkd_jax.synthesis.base import STUDENT_AUGMENTATIONS


def default_cache_dir() -> str:
    return os.environ.get("DFKD_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dfkd_jax"))


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = ""  # a name in dfkd_jax.methods.METHODS

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "fashion_mnist"
    c.data.data_dir = ""  # where tfds datasets are built; "" = $DFKD_JAX_DATA_DIR or ~/tensorflow_datasets
    # folder with the raw files (IDX, CIFAR tarball); "" = known places, then download
    c.data.source_dir = os.environ.get("DFKD_JAX_SOURCE_DIR", "")
    c.data.eval_batch_size = 1000

    c.teacher = ml_collections.ConfigDict()
    c.teacher.arch = "lenet5"
    c.teacher.checkpoint = ""  # teacher folder; "" = the cache's folder (obtain.teacher_path)
    # several teachers: comma-separated teacher folders (each with its own architecture and normalisation);
    # overrides checkpoint. They must agree on classes and image shape (dfkd_jax.ensemble)
    c.teacher.checkpoints = ""
    c.teacher.train_if_missing = True  # train it on the real data when the cache has none (never into teacher.checkpoint)
    c.teacher.epochs = 10
    c.teacher.batch_size = 128
    c.teacher.lr = 2e-3  # Adam, cosine decay
    c.teacher.label_noise = 0.0
    c.teacher.train_examples = 0  # train on this many training examples drawn at random (0 = all)

    c.generator = ml_collections.ConfigDict()
    c.generator.arch = "dafl"
    c.generator.nz = 100
    c.generator.ngf = 64
    c.generator.optimizer = "adam"
    c.generator.lr = 1e-3
    c.generator.b1 = 0.9
    c.generator.b2 = 0.999
    c.generator.momentum = 0.9
    c.generator.weight_decay = 0.0
    c.generator.schedule = "constant"  # constant | cosine | step
    c.generator.milestones = (0.2, 0.4)  # fractions of the run, for the step schedule
    c.generator.decay = 0.1
    c.generator.grad_clip = 0.0  # 0 = off
    c.generator.steps = 1  # k: generator updates per round
    c.generator.bn_eps = 1e-5  # epsilon of the generator's BatchNorms after convolutions (DAFL, PRE-DFKD: 0.8)
    c.generator.init = "torch"  # torch | uniform (U(+-0.08), PRE-DFKD) | normal (N(0, 0.02), CuDFKD/AdaDFKD)
    # the student's BatchNorm mode during generator updates: train (batch statistics; running averages
    # untouched) | eval (running averages: the CMI-derived DFQ, CuDFKD, AdaDFKD)
    c.generator.student_mode = "train"
    c.generator.terms = ml_collections.ConfigDict()  # term name -> weight (dfkd_jax.objectives)
    # term name -> (begin, end) fractions of the run: the weight ramps linearly from 0 to its value at end;
    # or (begin, end, rounds): the weight grows by its value every `rounds` rounds between begin and end
    # (CuDFKD's grad_adv per epoch), so its final strength follows the run's length
    c.generator.ramps = ml_collections.ConfigDict()

    c.student = ml_collections.ConfigDict()
    c.student.arch = "lenet5_half"
    c.student.optimizer = "sgd"
    c.student.lr = 0.1
    c.student.b1 = 0.9
    c.student.b2 = 0.999
    c.student.momentum = 0.9
    c.student.weight_decay = 5e-4
    c.student.schedule = "constant"
    c.student.milestones = (0.2, 0.4)
    c.student.decay = 0.1
    c.student.grad_clip = 0.0
    c.student.steps = 5  # m: student updates per round
    # fresh: new z per student step | reuse: the last generator step's batch, made before that step |
    # regenerate: the last generator step's z through the updated generator (ZSKT) | pool: draw from the
    # on-device pool of the last ``pool_size`` generated samples (dfkd_jax.pool)
    c.student.batch = "fresh"
    # the generator's BatchNorm mode when it makes the student's batches (fresh, regenerate) and the
    # sample grids: train (batch statistics) | eval (running averages: DFQ, CuDFKD, AdaDFKD)
    c.student.generator_mode = "train"
    c.student.pool_size = 4096
    c.student.pool_dtype = "float32"  # storage of the pool's pixels: float32 | bfloat16 | uint8 (round(255 p))
    c.student.pool_logits = False  # inversion: also store the teachers' logits (exported with a transfer set)
    # the student's draw from the pool, on the device: none | crop_flip (RandomCrop(pad 4) + flip, the inversion
    # code's CIFAR transform); an augmented batch is labelled by the teachers, not by stored logits
    c.student.augment = "none"
    c.student.lr_min = 0.0  # the cosine schedule's final learning rate (CMI / Fast: eta_min 2e-4)
    c.student.terms = ml_collections.ConfigDict()
    c.student.ramps = ml_collections.ConfigDict()
    c.student.tau = 1.0  # temperature of the kd term
    # CuDFKD's self-paced weight v per sample (lambda from hparams.spl_lambda0, growing by hparams.spl_alpha per student update)
    c.student.self_paced = False

    # How pseudo-samples are made (dfkd_jax.synthesis). generator.steps is the number of synthesis steps per
    # round, generator.lr/b1/b2 their optimiser, generator.terms the synthesis objective.
    c.synthesis = ml_collections.ConfigDict()
    c.synthesis.kind = "online"  # online | pixels (ADI) | generator (CMI) | meta (Fast)
    # how a round runs its loops: unroll (one program) | scan (one program, lax.scan) | python (one jitted step
    # per iteration); see docs/performance.md for the figures behind each method's choice
    c.synthesis.loop = "unroll"
    c.synthesis.batch_size = 0  # the inversion batch; 0 = train.batch_size
    c.synthesis.lr_z = 0.0  # the latents' learning rate (Fast); 0 = generator.lr
    c.synthesis.warmup = 0  # rounds of synthesis only, before the student learns and the adversarial term starts (Fast)
    # the synthesis steps' convolutions ('' = conv_impl): pixel inversion needs only the teachers' input gradients,
    # whose fastest CPU formulation differs from the student's (docs/performance.md, "Synthesis loops")
    c.synthesis.conv_impl = ""
    c.synthesis.cr = 0.0  # CMI's contrastive weight
    c.synthesis.cr_temperature = 0.2
    c.synthesis.bank_size = 40960  # CMI's memory bank rows
    c.synthesis.n_neg = 4096  # bank rows drawn per step
    c.synthesis.head_dim = 256
    # CMI's instance embedding, per teacher: bn_means (the spatial means of every BN input, CMI) | feature (the
    # pooled penultimate feature: BN-free teachers); fused over several teachers by concat | mean (equal widths)
    c.synthesis.embedding = "bn_means"
    c.synthesis.embedding_fusion = "concat"
    # CMI: the generator re-drawn every round by this init scheme (normal | torch), or drawn once and kept (keep)
    c.synthesis.reset = "normal"
    c.synthesis.meta = "fomaml"  # Fast: fomaml | reptile
    c.synthesis.reptile_scale = 67.0
    c.synthesis.bn_momentum = 0.0  # Fast's bn_mmt
    c.synthesis.reset_l0_round = -1  # Fast's reset_l0: the round at which the first layer is re-drawn; -1 = never
    c.synthesis.transfer_set = ""  # train from this stored transfer set (dfkd_jax.transfer) instead of synthesising
    c.synthesis.export = ""  # at the end of the run, write the pool as a transfer set to this folder
    # soft targets (synthesis.kind='soft_pixels', dfkd_jax.synthesis.targets): 'dirichlet' (ZSKD) | 'mvn' (Wang)
    c.synthesis.targets = "dirichlet"
    c.synthesis.dirichlet_betas = (1.0, 0.1)  # ZSKD's beta; rounds cycle over (class, beta)
    c.synthesis.mvn_layer = "penultimate"  # Wang: the modelled layer, 'penultimate' (the FC before the head) | 'logits'
    c.synthesis.mvn_sigma = 1.5  # Wang: Sigma = D R D with D = sqrt(sigma) I (1.5 MNIST, 2.0 CIFAR-10)
    c.synthesis.pixel_init = "uniform"  # 'uniform': U[0, 1] pixels (ZSKD's code) | 'normal': N(0, 1), normalised

    # PRE-DFKD's generative memory (dfkd_jax.memory): a VAE trained on the novel samples, replayed to the student
    c.memory = ml_collections.ConfigDict()
    c.memory.enabled = False
    c.memory.nz = 256  # the VAE's latent size
    c.memory.ngf = 0  # decoder width; 0 = generator.ngf
    c.memory.batch_size = 128  # replayed samples per student update (and per VAE update)
    c.memory.update_steps = 4  # the VAE trains during the first update_steps student updates of a round
    c.memory.lr = 5e-4  # Adam
    c.memory.kl_weight = 1e-5
    c.memory.z_lr = 0.02  # the one Adam step on replay latents
    # the decoder's BatchNorm mode when replaying to the student (the VAE's own update replays in train
    # mode): train | eval (PRE-DFKD's distill_knowledge sets mem_generator.eval())
    c.memory.replay_mode = "train"

    c.hparams = ml_collections.ConfigDict()
    c.hparams.balance_log_base = 0.0  # 0 = natural log; DAFL uses 10
    c.hparams.balance_tau = 1.0  # temperature of the teacher's softmax in the balance term
    c.hparams.adv_tau = 3.0  # temperature of the adv_kd, adv_kd_masked and adv_js terms
    # batchmean: KL / JS summed over classes, mean over the batch | mean: also divided by the number of
    # classes (PyTorch's default 'mean' reduction of F.kl_div / nn.KLDivLoss: ZSKT, PRE-DFKD's JS);
    # applies to the kl, adv_kl and adv_js terms
    c.hparams.kl_reduction = "batchmean"
    c.hparams.adv_detach_teacher = False  # adversarial terms reach the generator through the student only
    c.hparams.target_tau = 20.0  # temperature of soft_ce (ZSKD) and soft_kl (soft-targeted synthesis)
    # several teachers: ensemble (one_hot on the teachers' mean logits, bn the mean over teachers) | mean (one_hot
    # and bn: the mean over teachers of each teacher's own term) | sum (their sum; MTCKI's "summed")
    c.hparams.teacher_reduction = "ensemble"
    c.hparams.mt_temperature = 0.2  # MTCKI's multi-teacher-student InfoNCE (the mt_contrast student term)
    c.hparams.spl_lambda0 = 2.0  # self-paced lambda at the start
    c.hparams.spl_alpha = 1e-4  # lambda grows by alpha per student update (CuDFKD's alpha)
    c.hparams.r2m_queue_size = 8192  # AdaDFKD N_neg
    c.hparams.r2m_temperature = 0.07
    c.hparams.r2m_window = 0.9  # k
    c.hparams.r2m_begin = 0.25  # b
    c.hparams.r2m_end = 0.75  # f
    c.hparams.relation_temperature = 0.07
    # AdaDFKD's relation InfoNCE: teacher (each teacher feature picks its student feature among the batch's,
    # the released code) | student (each student feature picks its teacher feature)
    c.hparams.relation_anchor = "teacher"

    c.train = ml_collections.ConfigDict()
    c.train.rounds = 200
    c.train.batch_size = 256
    c.train.eval_every = 20
    c.train.log_every = 10
    c.train.checkpoint_every = 50
    c.train.sample_every = 100
    c.train.keep_checkpoints = 2
    c.train.progress = True

    c.distributed = False  # call jax.distributed.initialize() (multi-host runs)
    c.compute_dtype = "float32"
    # convolutions (dfkd_jax.models.fast_conv): auto (matrix-product gradients on CPU, XLA's own on
    # GPU/TPU) | matmul (the CPU formulations everywhere) | xla (XLA's own everywhere)
    c.conv_impl = "auto"
    return c


def all_keys(cfg, prefix=""):
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        yield name
        if isinstance(v, ml_collections.ConfigDict) and k not in ("terms", "ramps"):
            yield from all_keys(v, name + ".")


def unknown_key_message(key: str, cfg: ml_collections.ConfigDict) -> str:
    keys = list(all_keys(cfg))
    close = difflib.get_close_matches(key, keys, n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (f"Unknown config key {key!r}.{hint} The keys and their defaults are in dfkd_jax/config.py "
            "(base_config); the config file sets them.")


# Counts a run cannot take below a minimum (a run of 0 rounds would "finish" and report an untrained student).
_MINIMUMS = {"train.rounds": 1, "train.batch_size": 1, "train.eval_every": 1, "train.log_every": 1,
             "train.checkpoint_every": 1, "train.sample_every": 1, "train.keep_checkpoints": 1,
             "data.eval_batch_size": 1, "teacher.epochs": 1, "teacher.batch_size": 1, "generator.steps": 0,
             "student.steps": 0, "student.pool_size": 1, "synthesis.batch_size": 0}


def _check_counts(cfg: ml_collections.ConfigDict) -> None:
    for key, least in _MINIMUMS.items():
        section, field = key.split(".")
        value = cfg[section][field]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"config.{key} must be an integer of at least {least}, not {value!r}.")


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Check names a run would otherwise trip over deep inside (method, terms, schedules)."""
    _check_counts(cfg)
    if cfg.method not in methods.METHODS:
        raise ConfigError(f"Unknown method {cfg.method!r}. Valid methods: {', '.join(sorted(methods.METHODS))}.")
    for role, registry in (("generator", objectives.GENERATOR_TERMS), ("student", objectives.STUDENT_TERMS)):
        for name in cfg[role].terms:
            if name not in registry:
                raise ConfigError(f"Unknown {role} term {name!r} in config.{role}.terms. "
                                 f"Valid {role} terms: {', '.join(sorted(registry))}.")
        for name in cfg[role].ramps:
            if name not in cfg[role].terms:
                raise ConfigError(f"config.{role}.ramps names {name!r}, which is not in config.{role}.terms.")
            ramp = tuple(cfg[role].ramps[name])
            if len(ramp) not in (2, 3, 4) or not 0.0 <= ramp[0] <= ramp[1] <= 1.0 or \
                    (len(ramp) >= 3 and ramp[2] <= 0) or (len(ramp) == 4 and ramp[3] < 0):
                raise ConfigError(f"config.{role}.ramps.{name} must be (begin, end), (begin, end, rounds) or "
                                  "(begin, end, rounds, start) with 0 <= begin <= end <= 1, rounds > 0 and start >= 0.")
        if cfg[role].schedule not in ("constant", "cosine", "step"):
            raise ConfigError(f"config.{role}.schedule must be constant, cosine or step, not {cfg[role].schedule!r}.")
        if cfg[role].optimizer not in ("sgd", "adam"):
            raise ConfigError(f"config.{role}.optimizer must be sgd or adam, not {cfg[role].optimizer!r}.")
    for key in ("teacher.arch", "student.arch"):
        section, field = key.split(".")
        try:
            parse_arch(cfg[section][field])
        except ConfigError as e:
            raise ConfigError(f"config.{key}: {e}") from None
    if cfg.generator.arch not in GENERATORS:
        raise ConfigError(f"Unknown config.generator.arch {cfg.generator.arch!r}. "
                          f"Valid names: {', '.join(sorted(GENERATORS))}.")
    if cfg.student.batch not in ("fresh", "reuse", "regenerate", "pool"):
        raise ConfigError(f"config.student.batch must be fresh, reuse, regenerate or pool, not {cfg.student.batch!r}.")
    for key, valid in (("generator.student_mode", ("train", "eval")), ("student.generator_mode", ("train", "eval")),
                       ("memory.replay_mode", ("train", "eval")), ("generator.init", INIT_SCHEMES),
                       ("hparams.kl_reduction", ("batchmean", "mean")),
                       ("hparams.relation_anchor", ("teacher", "student")),
                       ("hparams.teacher_reduction", ("ensemble", "mean", "sum"))):
        section, field = key.split(".")
        if cfg[section][field] not in valid:
            raise ConfigError(f"config.{key} must be one of {', '.join(valid)}, not {cfg[section][field]!r}.")
    if "queue" in objectives.needs(dict(cfg.generator.terms), objectives.GENERATOR_TERMS) \
            and cfg.hparams.r2m_queue_size < cfg.train.batch_size:
        raise ConfigError(f"config.hparams.r2m_queue_size={cfg.hparams.r2m_queue_size} is smaller than "
                          f"config.train.batch_size={cfg.train.batch_size}: each generator update pushes a whole "
                          "batch of keys into the queue. Use a queue at least as large as the batch.")
    choices: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("synthesis.kind", synthesis.kinds()), ("synthesis.loop", LOOPS), ("student.pool_dtype", tuple(STORAGE_DTYPES)),
        ("student.augment", tuple(STUDENT_AUGMENTATIONS)), ("synthesis.meta", ("fomaml", "reptile")),
        ("synthesis.targets", ("dirichlet", "mvn")), ("synthesis.mvn_layer", ("penultimate", "logits")),
        ("synthesis.pixel_init", ("uniform", "normal")), ("synthesis.embedding", ("bn_means", "feature")),
        ("synthesis.embedding_fusion", ("concat", "mean")))
    for key, allowed in choices:
        section, field = key.split(".")
        if cfg[section][field] not in allowed:
            raise ConfigError(f"config.{key} must be one of {', '.join(allowed)}, not {cfg[section][field]!r}.")
    soft_terms = {n for n in ("soft_ce", "soft_kl", "conv1_activation") if cfg.generator.terms.get(n)}
    if cfg.synthesis.kind == "soft_pixels":
        extra = objectives.needs(dict(cfg.generator.terms), objectives.GENERATOR_TERMS) - {"t_feature", "conv1"}
        if extra:
            raise ConfigError(f"synthesis.kind='soft_pixels' computes the teachers' logits, features and first "
                              f"convolution only; generator.terms need {', '.join(sorted(extra))}. Remove those terms "
                              "or use synthesis.kind='pixels'.")
    elif soft_terms:
        raise ConfigError(f"generator.terms {', '.join(sorted(soft_terms))} read soft targets (and the first "
                          "convolution) that only synthesis.kind='soft_pixels' provides.")
    if cfg.synthesis.kind != "online" and cfg.student.pool_size < cfg.train.batch_size:
        raise ConfigError("config.student.pool_size must be at least config.train.batch_size (the inversion "
                          "methods train the student from the pool).")
    if cfg.synthesis.kind == "online" and not cfg.synthesis.transfer_set \
            and cfg.student.batch in ("reuse", "regenerate", "pool") and cfg.generator.steps < 1:
        raise ConfigError(f"config.student.batch={cfg.student.batch!r} learns from the generator updates' batches, "
                          "but config.generator.steps is 0: set it to at least 1 or use student.batch=fresh.")
    if cfg.student.batch == "pool" and cfg.student.pool_size < cfg.train.batch_size:
        raise ConfigError("config.student.pool_size must be at least config.train.batch_size.")
    if cfg.conv_impl not in IMPLEMENTATIONS:
        raise ConfigError(f"config.conv_impl must be one of {', '.join(IMPLEMENTATIONS)}, not {cfg.conv_impl!r}.")
    if cfg.synthesis.conv_impl not in ("",) + tuple(IMPLEMENTATIONS):
        raise ConfigError("config.synthesis.conv_impl must be '' (= conv_impl) or one of "
                          f"{', '.join(IMPLEMENTATIONS)}, not {cfg.synthesis.conv_impl!r}.")
    if cfg.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config.compute_dtype must be float32 or bfloat16, not {cfg.compute_dtype!r}.")
