package postfixconf

import (
	"strings"
	"testing"
)

func opts() Options {
	return Options{Policy: "127.0.0.1:1", Socketmap: "127.0.0.1:2", Milter: "127.0.0.1:3", SASL: "127.0.0.1:4", MailRoot: "/var/mail", VMailbox: "/var/lib/mailgate/postfix/vmailbox", UID: 5000, GID: 5000}
}

func TestCheck(t *testing.T) {
	for name, mod := range map[string]func(*Options){
		"no policy":        func(o *Options) { o.Policy = "" },
		"bad socketmap":    func(o *Options) { o.Socketmap = "localhost" },
		"bad port":         func(o *Options) { o.Milter = "127.0.0.1:99999" },
		"relative root":    func(o *Options) { o.MailRoot = "mail" },
		"root with space":  func(o *Options) { o.MailRoot = "/var/my mail" },
		"zero uid":         func(o *Options) { o.UID = 0 },
		"comma in address": func(o *Options) { o.SASL = "127.0.0.1:4,x" },
		"bad delimiter":    func(o *Options) { o.Delimiter = "+ -" },
	} {
		o := opts()
		mod(&o)
		if err := o.Check(); err == nil {
			t.Errorf("%s: Check accepted %+v", name, o)
		}
	}
	o := opts()
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	if o.Submission != "submission" || o.Submissions != "submissions" {
		t.Errorf("defaults: %q %q", o.Submission, o.Submissions)
	}
}

func TestOutput(t *testing.T) {
	o := opts()
	o.Check()
	main, master := MainCF(o), MasterCF(o)
	for _, want := range []string{
		"virtual_mailbox_domains = socketmap:inet:127.0.0.1:2:domains\n",
		"virtual_alias_maps = socketmap:inet:127.0.0.1:2:aliases\n",
		"smtpd_sasl_path = inet:127.0.0.1:4\n",
		"milter_default_action = tempfail\n",
		"check_policy_service { inet:127.0.0.1:1, default_action=DEFER_IF_PERMIT }",
		"virtual_mailbox_base = /var/mail\n",
		"allow_percent_hack = no\n",
		"recipient_delimiter = +\n",
	} {
		if !strings.Contains(main, want) {
			t.Errorf("main.cf lacks %q", want)
		}
	}
	for _, want := range []string{"submission inet n - n - - smtpd\n", "submissions inet n - n - - smtpd\n", "-o smtpd_milters=inet:127.0.0.1:3\n", "-o smtpd_tls_wrappermode=yes\n", "virtual unix - n n - - virtual\n  -o virtual_mailbox_maps=texthash:/var/lib/mailgate/postfix/vmailbox\n"} {
		if !strings.Contains(master, want) {
			t.Errorf("master.cf lacks %q", want)
		}
	}
	// Every main.cf line is a comment or NAME = VALUE (postconf -e ready).
	for _, l := range strings.Split(strings.TrimSpace(main), "\n") {
		if !strings.HasPrefix(l, "#") && !strings.Contains(l, " = ") {
			t.Errorf("main.cf line %q", l)
		}
	}
	// master.cf -o values hold no white space (master.cf splits on it).
	for _, l := range strings.Split(master, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "-o "); ok && strings.ContainsAny(v, " \t") {
			t.Errorf("master.cf option with white space: %q", l)
		}
	}
}
