package adapter

import "testing"

func TestCheckHostPort(t *testing.T) {
	tests := []struct {
		addr   string
		listen bool
		want   string
	}{
		{"127.0.0.1:2575", true, ""},
		{":0", true, ""},
		{"[::1]:8080", true, ""},
		{"ris.example.nhs.uk:2575", false, ""},
		{"127.0.0.1:99999", true, `port "99999" must be a number from 0 to 65535`},
		{"127.0.0.1:http", true, `port "http" must be a number from 0 to 65535`},
		{"127.0.0.1:0", false, `port "0" must be a number from 1 to 65535`},
		{"127.0.0.1:-1", true, `port "-1" must be a number from 0 to 65535`},
		{":2575", false, "must be host:port with a host"},
		{"127.0.0.1", true, "must be host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := CheckHostPort(tt.addr, tt.listen)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("CheckHostPort(%q, %v) = %q, want %q", tt.addr, tt.listen, got, tt.want)
			}
		})
	}
}
