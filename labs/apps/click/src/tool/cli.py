import click

GREETING = "hello"


@click.group()
def cli():
    """The shop tool."""


@cli.command()
@click.argument("name")
@click.option("--times", default=1)
def hello(name, times):
    for _ in range(times):
        click.echo(f"{GREETING} {name}")


@cli.command()
def version():
    click.echo("1.0")


@cli.command()
def legacy():
    click.echo("legacy")
