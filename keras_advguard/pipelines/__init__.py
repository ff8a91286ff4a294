"""Pipelines that run the library on data-processing engines (floor 4, optional).

- `keras_advguard.pipelines.beam`: Apache Beam transforms (extraction with
  `RunInference`, exact class medoids per (class, layer), batch scoring with a
  saved detector). Needs the `beam` extra: `pip install "keras-advguard[beam]"`.

Nothing here is imported by `import keras_advguard`.
"""
