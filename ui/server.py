"""What `workbench ui` serves: the Streamlit app (app.py and pages/) behind the Host check of
`ui.hosts`, which Streamlit applies to websocket connections only (and only when asked)."""

import streamlit as st
from starlette.middleware import Middleware

from ui.hosts import HostCheck

app = st.App("app.py", middleware=[Middleware(HostCheck)])
