"""The dataset builder: scrubbed records → instruction samples → LLaVA / LLaMA-Factory / HF
messages datasets with leakage-free splits (see :mod:`mmdata.build.stage`)."""
