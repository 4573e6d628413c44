package pds

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// SystemODSLegacy is the identifier system older PDS examples give the
// registered practice's ODS code; current ones use
// nhs.SystemODSOrganization. Both are read.
const SystemODSLegacy = "https://digital.nhs.uk/services/organisation-data-service"

// patientJSON is the part of a PDS Patient the client reads.
type patientJSON struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		VersionID string `json:"versionId"`
		Security  []struct {
			System string `json:"system"`
			Code   string `json:"code"`
		} `json:"security"`
	} `json:"meta"`
	GeneralPractitioner []struct {
		Type       string `json:"type"`
		Identifier struct {
			System string `json:"system"`
			Value  string `json:"value"`
			Period struct {
				Start string `json:"start"`
				End   string `json:"end"`
			} `json:"period"`
		} `json:"identifier"`
	} `json:"generalPractitioner"`
}

// parse reads a 200 reply to a lookup of the NHS number asked.
func (c *Client) parse(body []byte, asked string) (Result, error) {
	var p patientJSON
	if err := json.Unmarshal(body, &p); err != nil {
		return Result{}, errors.New("reply is not JSON")
	}
	if p.ResourceType != "Patient" {
		return Result{}, errors.New("reply is not a Patient")
	}
	if !nhs.ValidNumber(p.ID) {
		return Result{}, errors.New("the Patient's id is not a valid NHS number")
	}
	res := Result{NHSNumber: p.ID, Superseded: p.ID != asked, VersionID: p.Meta.VersionID}
	for _, s := range p.Meta.Security {
		// Sandbox and specification disagree on the label's system; the
		// codes are the v3 Confidentiality codes either way.
		if s.Code == "R" || s.Code == "V" {
			res.Restricted = true
		}
	}
	// Today in England: from midnight to 01:00 BST, UTC's date is still
	// yesterday's.
	today := c.now().In(fhir.CalendarZone()).Format("2006-01-02")
	for _, gp := range p.GeneralPractitioner {
		id := gp.Identifier
		value := strings.ToUpper(strings.TrimSpace(id.Value))
		if value == "" || !current(id.Period.Start, id.Period.End, today) {
			continue
		}
		switch {
		case id.System == nhs.SystemGMP || gp.Type == "Practitioner":
			if id.System == nhs.SystemGMP && res.GP == "" {
				res.GP = value
			}
		case id.System == nhs.SystemODSOrganization || id.System == SystemODSLegacy:
			if res.GPPractice == "" && nhs.LooksLikeODSCode(value) {
				res.GPPractice = value
			}
		}
	}
	return res, nil
}

// current reports whether a period of FHIR dates (or dateTimes) holds
// today, a yyyy-mm-dd date; an open end holds every later day.
func current(start, end, today string) bool {
	day := func(s string) string {
		if len(s) >= 10 {
			return s[:10]
		}
		return s
	}
	if start != "" && day(start) > today {
		return false // a registration that has not started
	}
	return end == "" || day(end) >= today
}
