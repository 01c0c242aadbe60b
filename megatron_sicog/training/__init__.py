"""Training for every SICOG stage (SFT, DPO, re-pretraining): one trainer, its components."""
