// Command mailgate is the address-and-sender-policy core of a self-hosted
// mail server. Run "mailgate --help" for the commands; the work is done in
// package internal/cli and the packages it calls.
package main

import (
	"os"

	"github.com/mailgate/mailgate/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
