"""The SICOG round as data: stages (one tool's command, its inputs and outputs) and the runners of a graph.

    graph.py    Stage (a tool's command) and Step (in-process glue), dependencies from inputs -> outputs
    stages.py   the command of each kind of stage, built from the settings (train, preprocess, generate, curate)
    settings.py the round's settings, declared once for the demo's LoopConfig and the cluster's RoundConfig
    round.py    the round on a cluster's data: stage 1 -> candidates -> curation -> mmap -> re-pretraining -> SFT
    local.py    runs a graph here: one subprocess per stage, resumable markers, commands.sh, logs, timings
    sbatch.py   renders a graph as a chain of sbatch jobs (afterok dependencies, arrays for sharded stages)
    step.py     runs one in-process step as a program (how a scheduler runs the glue)
"""
