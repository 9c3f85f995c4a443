"""The bundled reference trainer: does one model reading images, sound and sensors together
catch faults that no single modality shows?

LLaVA-style: cached encoder features per modality (``RUN/features``) → a small projector per
modality → token embeddings spliced into a causal language model's input, where the prompt's
``<image>``/``<audio>`` placeholders stand (sensor windows get a ``<sensor>`` slot before the
prompt). LoRA adapters (peft) train the language model, the projectors train fully. The
stages ``train`` (:func:`mmdata.train.stage.run_train`) and ``eval``
(:func:`mmdata.train.stage.run_eval`, with the per-modality ablation) run on the output of
``mmdata build`` + ``mmdata features``.

Modules: :mod:`.data` (samples + features → batches), :mod:`.tokenizer` (a BPE trained on
the train split), :mod:`.model` (projectors + LM + LoRA), :mod:`.loop` (training, early
stopping, resume), :mod:`.checkpoint` (safetensors + JSON, never pickle), :mod:`.evaluate`
(generation and exact metrics), :mod:`.ablation`, :mod:`.stage`.
"""
