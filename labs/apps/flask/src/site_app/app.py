from flask import Flask, jsonify, request

GREETING = "welcome"

app = Flask(__name__)
app.config["PAGE_SIZE"] = 2


@app.route("/")
def index():
    return f"{GREETING} to the shop"


@app.route("/items/<int:n>")
def items(n):
    size = app.config["PAGE_SIZE"]
    return jsonify(list(range(n, n + size)))


@app.route("/echo", methods=["POST"])
def echo():
    return jsonify(request.get_json())


@app.route("/legacy")
def legacy():
    return "old page"
