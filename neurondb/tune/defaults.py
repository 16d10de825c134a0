"""Default hyper-parameters of prompt tuning (no heavy imports: the CLI reads them).

AdamW on the prompt at ``LR`` and on a head at ``HEAD_LR``; chosen on the tiny test models
and on MiniLM + movie_reviews (figures in ``neurondb.tune.train``)."""

LR = 0.01
HEAD_LR = 0.01
EPOCHS = 30
BATCH_SIZE = 16
PATIENCE = 5
