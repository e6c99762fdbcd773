"""The chapter's studies and demo stories: users of the product, one floor above it.

``studies.chapter`` runs the chapter's studies (``glimpse study``), ``studies.tuning`` the hyperparameter and
architecture search (``glimpse tune``), ``studies.spurious`` the snow story (``glimpse spurious``) and
``studies.localization`` the localization set that measures how well explanations point at the object
(``python -m studies.localization``). They fit through ``training.fit`` and may use serving, explain_api, whatif,
glimpse_wire and rendering; nothing below imports them.
"""
