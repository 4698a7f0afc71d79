"""What runs in a user's Jupyter server: server extensions, the contents manager, the user's
access token, and the init-container entry points that run as the user before it starts."""
