"""pagkd_lite: a thin, tested implementation of PaGKD (pairing-free group-level knowledge
distillation from NBI to WLI endoscopy, Hu et al., AAAI 2026) for learning and teaching.

Module map, by layer (a module imports only from its own layer or the layers above it, except
that the method modules also use ``accel`` for bf16 and ``distributed`` for torchrun):

Data
    synthendo    SynthEndo, the synthetic WLI/NBI lesion data set (and its folder export)
    data         ImageSet: uint8 images, labels, lesion/patient ids of one modality
    transforms   uint8 -> float, normalisation, augmentation (``prepare``)
    sampler      GroupSampler: class-balanced, unpaired WLI and NBI batches of one step
    realdata     your own WLI/NBI folders or CSV manifest -> ImageSets, with a load report
    decode_cache each real image decoded once into a memory-mapped store on disk
    lesion_ids   the lesion key: one lesion id, one class (stems scoped by class)
    splits       leakage-free folds over both modalities; UnionFind of patient/lesion ids
    cards        data cards (the facts a data set must state)
Models and method
    models       timm backbone + 1x1 embedding (tokens) + linear head; ``eval_mode``
    cam          Grad-CAM, PAR refinement, tri-state token labels
    gkd_pro      GKD-Pro: group prototypes, ``L_con`` and ``L_pcls`` (batched)
    gkd_den      GKD-Den: relation maps, relation-guided attention, ``L_Den`` (batched)
    reference    the same two losses (and NT-Xent) as slow, obvious loops
    pretrain     SimCLR on the unlabelled WLI + NBI training images (``model.init=ssl``)
    distill      one Distiller per method and the registry ``METHODS`` (name -> Method)
    mechanism    what GKD-Den sees, per epoch, on a held-out probe (labels, relations,
                 common component, attention entropy, CAM quality)
Running
    config       dataclass Config, presets, ``--set`` overrides, ``build_config``
    train        ``train_step`` and ``fit`` (model selection on validation), ``predict``
    accel        bf16, channels_last, pinned copies, torch.compile (``cfg.runtime``)
    distributed  torchrun: gradient averaging, row gathering
    checkpoint   atomic saves, ``weights_only=True`` loads
    runinfo      what a run ran on: torch version, threads, device, determinism
    pipeline     data -> teacher (cached) -> students -> evaluation, the demo
    metrics      accuracy, macro precision / sensitivity / specificity / F1, AUC; bootstrap
    report       the HTML report of a demo run
    bench        the SynthEndo benchmark over seeds and methods (CSV, table, figures)
    cv           K-fold cross-validation on real data, predictions pooled over folds
Course helpers (the notebooks' figures; they call the distiller's own functions)
    viz          Plotly figures and the RGB overlays
    explore      the GKD-Den explorer of notebook 04
    embedding    embeddings, GKD-Pro prototype sets, UMAP, modality-mixing numbers
Entry points
    cli          ``pagkd-lite`` (also ``python -m pagkd_lite.cli``): parsing and commands
"""

__version__ = "0.1.0"
