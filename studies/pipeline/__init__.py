"""The preparation and evaluation pipeline: from a study's configuration to its Stimulus rows.

The prepare walk, from ``study_prepare(study_id=...)`` down to the Stimulus rows; each module
is entered once and imports only the modules below it (never one it was called from):

1. ``studies.services.lifecycle.study_prepare`` (admin, commands) ->
   ``pipeline.prepare.study_prepare``: locks the study, opens the job (``pipeline.jobs.job_open``),
   on commit enqueues the first task (or runs it in a thread without a broker).
2. ``studies.tasks`` (thin Celery tasks; they chain the stages) ->
3. ``pipeline.stages``: ``prepare_predict_stage`` (``Prediction`` rows), ``prepare_plan_stage``
   (``Item`` rows, the chunks), ``prepare_chunk_stage`` (``Stimulus`` rows, items linked),
   ``job_finish_if_complete``; the job's bookkeeping through ``pipeline.jobs`` ->
4. ``pipeline.plan``: items, stimulus slots and keys, chunks, the obvious items kept; asks the
   study's design (``studies.designs``: ``<design>.py`` hooks, ``options.py``) what the items and
   their maps are ->
5. ``pipeline.gpu.explain_runner`` (torch, the ``explainers`` engine: predictions, maps, PNGs) ->
6. ``pipeline.stimuli``: stimulus settings and keys, existing rows found in one query, files
   written and rows created.

Below all of them: ``studies.designs.options`` (``explainer_options``), ``studies.lib.scenes``
(categories, boxes, class ids, :class:`~studies.lib.scenes.PrepareInputError`),
``studies.lib.rendering`` and ``studies.models``. ``pipeline.prepare`` also calls the stages
directly (``prepare_inline``). The evaluation (``pipeline.evaluation`` ->
``pipeline.gpu.evaluation_runner``) uses ``pipeline.jobs`` and ``pipeline.plan`` the same way.
"""
