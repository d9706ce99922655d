"""The HTTP routes, one module per resource, each an :class:`fastapi.APIRouter`."""
