"""KFP pipeline definitions: the same functions run under kfp.local and on Vertex AI."""
