from site_app.app import app


@app.route("/about")
def about():
    return "about v1"
