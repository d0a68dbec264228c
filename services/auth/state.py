"""The auth service's process state: its signing key, token issuer and password hasher,
loaded before it serves (see `AuthComponents`)."""

from typing import Annotated

from fastapi import Depends

from services.auth.service import AuthComponents
from services.auth.settings import AuthSettings
from shared.service_app import ServiceContext, get_context

AuthContext = ServiceContext[AuthSettings, AuthComponents]
AuthContextDep = Annotated[AuthContext, Depends(get_context)]
