"""nuclio handler: boxmask as a CVAT interactor (draw a box, get its mask).

The translation lives in `boxmask.integrations.cvat.serverless`; this file only adapts nuclio's
event and context. `BOXMASK_CVAT_INTERACTOR_REPLY=mask` answers CVAT 2.59 and older.
"""

import json

from boxmask.integrations.cvat.serverless import BadRequest, function_predictor, interact_reply
from boxmask.integrations.cvat.settings import CvatSettings
from boxmask.runtime.errors import BackendUnavailable, RuntimeInputError


def init_context(context):
    context.logger.info("boxmask: loading the model")
    settings = CvatSettings.from_env()
    context.user_data.predictor = function_predictor(settings)
    context.user_data.reply = settings.interactor_reply
    context.logger.info(f"boxmask: serving {context.user_data.predictor.card.name}")


def _json(context, body, status_code):
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status_code)


def handler(context, event):
    try:
        reply = interact_reply(context.user_data.predictor, event.body, reply=context.user_data.reply)
    except (BadRequest, RuntimeInputError) as exc:
        context.logger.warn(f"boxmask: bad request: {exc}")
        return _json(context, {"error": str(exc)}, 400)
    except BackendUnavailable as exc:
        context.logger.error(f"boxmask: backend unavailable: {exc}")
        return _json(context, {"error": str(exc)}, 503)
    return _json(context, reply, 200)
