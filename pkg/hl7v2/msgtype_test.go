package hl7v2

import "testing"

func TestTypeMatches(t *testing.T) {
	tests := []struct {
		pattern, messageType string
		want                 bool
	}{
		{"ORM^O01", "ORM^O01", true},
		{"ORM^O01", "ORM^O02", false},
		{"ORM^*", "ORM^O01", true},
		{"ORM^*", "OML^O21", false},
		{"ORM^*", "ORM^", false},
		{"ORM^*", "ORM", false},
		{"ADT^*", "ADT^A17", true},
		{"ADT^A17", "ADT^A1", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.messageType, func(t *testing.T) {
			if got := TypeMatches(tt.pattern, tt.messageType); got != tt.want {
				t.Errorf("TypeMatches(%q, %q) = %v, want %v", tt.pattern, tt.messageType, got, tt.want)
			}
		})
	}
}

func TestValidTypePattern(t *testing.T) {
	tests := []struct {
		p    string
		want bool
	}{
		{"ORM^O01", true},
		{"SIU^*", true},
		{"ZPI^Z01", true},
		{"MDM^T02", true},
		{"ORM", false},
		{"orm^o01", false},
		{"*", false},
		{"*^*", false},
		{"ORM^O1", false},
		{"ORM^O011", false},
		{"1RM^O01", false},
		{"ORM^O01^ORM_O01", false},
		{"ORM^", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.p, func(t *testing.T) {
			if got := ValidTypePattern(tt.p); got != tt.want {
				t.Errorf("ValidTypePattern(%q) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}
