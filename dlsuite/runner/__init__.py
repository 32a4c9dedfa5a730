"""Running: ``train(cfg)`` (one tracked run), k-fold and bagging protocols, the lr / batch-size
finders, and pretrain-then-finetune. Above the tasks and the composition root, below the studies."""
