"""Training one architecture from scratch (`stage=train`, hnas.stages.train): the protocol's data
(`data`), learning-rate schedule (`schedule`), the train and test epochs (`loop`), checkpoints that resume
exactly (`checkpoint`) and the processes of a torchrun launch (`distributed`)."""
