"""Label Studio ML backend: Label Studio's JSON <-> `boxmask.runtime`.

`backend` translates tasks and regions to boxes and masks to brush/polygon results, `config`
reads the labelling config, `images` fetches task images. None of it knows the server: the
protocol's transport is the server's: the routes of `boxmask.server.routers.labelstudio` over
`boxmask.server.labelstudio_backends`.
"""
