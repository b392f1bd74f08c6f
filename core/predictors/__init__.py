"""Performance predictors: the ``Predictor`` base and sample (``base``), AIO-P's GNN (``aiop``), one-number baselines
(``baselines``), their saved files (``file``) and how they are scored (``scoring``)."""
