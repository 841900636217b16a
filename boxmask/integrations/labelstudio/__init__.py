"""Label Studio ML backend: Label Studio's JSON <-> `boxmask.runtime`.

`router` (FastAPI) speaks the protocol, `backend` translates tasks and regions to boxes and masks
to brush/polygon results, `config` reads the labelling config, `images` fetches task images.
"""
