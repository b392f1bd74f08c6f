"""Performance predictors (the family's contract is ``nascore.predictor``): AIO-P's GNN (``aiop``, its network in
``gnn``), its K-adapters and transfer to another task or space (``adapters``), one-number baselines
(``baselines``), saved predictor files (``file``), fitting and scoring on performance datasets (``fitting``,
``scoring``) and predicting one arch from a file (``predict``); ``nascore.cli.predictor`` runs them as the
``nascore predictor`` commands."""
