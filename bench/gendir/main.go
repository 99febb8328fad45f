// Command gendir writes a synthetic docker-mailserver configuration directory
// (package dirgen) for the load benchmarks of bench/load.sh.
//
//	go run ./bench/gendir -accounts 100000 -aliases 100000 -grants 10000 -regexps 1000 DIR
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/mailgate/mailgate/internal/dirgen"
)

func main() {
	var s dirgen.Size
	flag.IntVar(&s.Accounts, "accounts", 100_000, "accounts (postfix-accounts.cf)")
	flag.IntVar(&s.Aliases, "aliases", 100_000, "aliases (postfix-virtual.cf)")
	flag.IntVar(&s.Grants, "grants", 10_000, "send-as grants (postfix-send-as.cf)")
	flag.IntVar(&s.Regexps, "regexps", 1_000, "regexp rules (postfix-regexp.cf)")
	flag.IntVar(&s.Domains, "domains", 100, "domains the accounts and aliases are spread over")
	flag.IntVar(&s.CatchAlls, "catchalls", 50, "domains with a catch-all alias")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: gendir [flags] DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := dirgen.Write(flag.Arg(0), s); err != nil {
		fmt.Fprintln(os.Stderr, "gendir:", err)
		os.Exit(1)
	}
}
