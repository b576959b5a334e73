"""Rules teams adopting open models care about: licences, presets, whether a model fits."""
