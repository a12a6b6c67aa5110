"""Training encoders for retrieval: ranking losses (RLL, SRL, DCL, LRML), samplers, datasets, metrics."""
