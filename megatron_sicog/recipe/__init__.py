"""The SICOG round as data: stages (one tool's command, its inputs and outputs) and the runners of a graph.

    graph.py    Stage (a tool's command) and Step (in-process glue), dependencies from inputs -> outputs
    stages.py   the command of each kind of stage, built from the settings (train, preprocess, generate, curate)
    local.py    runs a graph here: one subprocess per stage, resumable markers, commands.sh, logs, timings
"""
