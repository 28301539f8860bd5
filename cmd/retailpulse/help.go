package main

import (
	"context"
	"fmt"
)

const usage = `usage: retailpulse [COMMAND] [flags]

Commands:
  serve    run the service (the default when no command is given)
  replay   rebuild job states from the event log and print them
  verify   rebuild from scratch, compare with the read model database, find stranded jobs
  requeue  put stranded jobs back on the work queue
  rebuild  delete the read model database and build it again from the log
  bench    load-generate against an in-process service or --url
  submit   submit a job from a JSON file and print its id (--wait: then watch it)
  watch    show a job's progress live, then its final status
  help     show this help; "retailpulse help COMMAND" shows a command's flags

Run "retailpulse COMMAND -h" for a command's flags.

` + envHelp + `
submit and watch fall back to RETAILPULSE_<FLAG> the same way (RETAILPULSE_URL, RETAILPULSE_TOKEN).
The other commands read their flags from the command line only.`

// isHelpFlag reports whether arg asks for help the way the flag package
// understands it.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// help: retailpulse help [COMMAND]. Without a command it prints the list of
// commands on Stdout; with one, that command's flags (as COMMAND -h does).
// Exit 0, or 2 for an unknown command or more than one argument.
func (m *Main) help(ctx context.Context, args []string) int {
	switch {
	case len(args) == 0 || (len(args) == 1 && (args[0] == "help" || isHelpFlag(args[0]))):
		fmt.Fprintln(m.Stdout, usage)
		return exitOK
	case len(args) == 1:
		switch args[0] {
		case "serve", "replay", "verify", "requeue", "rebuild", "bench", "submit", "watch":
			return m.Run(ctx, []string{args[0], "-h"})
		}
		fmt.Fprintf(m.Stderr, "retailpulse help: unknown command %q\n%s\n", args[0], usage)
		return exitUsage
	}
	fmt.Fprintf(m.Stderr, "retailpulse help: want at most one command, got %q\n%s\n", args, usage)
	return exitUsage
}
